"""Datasets with seeded, stratified train/validation/test splits.

A dataset loader returns :class:`DatasetSplits`; the engine batches it with :class:`TensorBatches`
(or ``DatasetSplits.train_batches``), whose shuffling and augmentation draw from a generator the
run owns, so a resumed run continues the same stream. The embedded digits are float tensors; the
image datasets keep uint8 pixels and read as normalised float batches (docs/data.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from growth.data.catalog import SPECS, check_available, check_readable, load_image_dataset, load_imagenet, option_problems, resolve_root
from growth.data.images import FolderImages, ImageArray
from growth.data.splits import DatasetSplits, TensorBatches, stratified_split
from growth.errors import ConfigError

__all__ = [
    "DATASETS",
    "SPECS",
    "DatasetSplits",
    "FolderImages",
    "ImageArray",
    "TensorBatches",
    "build_dataset",
    "check_dataset",
    "dataset_shape",
    "dataset_problems",
    "load_digits",
    "register_dataset_schemas",
    "resolve_root",
    "stratified_split",
]


def load_digits(cfg) -> DatasetSplits:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 64)
    y = bunch.target.astype(np.int64)
    rest, test = stratified_split(y, cfg.test_fraction, cfg.split_seed)
    train_rel, val_rel = stratified_split(y[rest], cfg.val_fraction, cfg.split_seed + 1)
    train, val = rest[train_rel], rest[val_rel]
    # One mean and std over all training pixels: per-pixel standardisation would blow up the
    # border pixels that are almost always 0 in training (measured: about 0.5 points of test accuracy).
    x = (x - x[train].mean()) / x[train].std()
    t = torch.from_numpy
    return DatasetSplits(
        t(x[train]), t(y[train]), t(x[val]), t(y[val]), t(x[test]), t(y[test]), num_classes=10, name="digits"
    )


DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "digits": load_digits,
    "cifar10": load_image_dataset,
    "cifar100": load_image_dataset,
    "tinyimagenet": load_image_dataset,
    "mnist": load_image_dataset,
    "fashion_mnist": load_image_dataset,
    "imagenet": load_imagenet,
}


def register_dataset_schemas(cs) -> None:
    """Store the schema of every dataset option that has settings beyond DatasetConfig."""
    from growth.data.schema import ArrayImageConfig, ImageNetConfig

    cs.store(group="dataset", name="image_schema", node=ArrayImageConfig)
    cs.store(group="dataset", name="imagenet_schema", node=ImageNetConfig)


def dataset_problems(cfg) -> list[str]:
    """Invalid values among the dataset options (checked before a run directory is written)."""
    return option_problems(cfg)


def check_dataset(cfg, read: bool = False) -> None:
    """Fail early (ConfigError) when the dataset's options are invalid or its files are absent.

    Cheap (no data are read): meant to run before a run directory is written. With `read`, the
    arrays of the in-memory datasets are read once too (before a sweep or study submits), so a
    corrupt file is found then rather than in every job.
    """
    if cfg.name not in DATASETS:
        raise ConfigError(f"dataset.name={cfg.name!r} is unknown: valid are {sorted(DATASETS)}")
    check_available(cfg)
    if read:
        check_readable(cfg)


def build_dataset(cfg) -> DatasetSplits:
    try:
        loader = DATASETS[cfg.name]
    except KeyError:
        raise ConfigError(f"dataset.name={cfg.name!r} is unknown: valid are {sorted(DATASETS)}") from None
    return loader(cfg)


def dataset_shape(cfg) -> tuple[tuple[int, ...], int] | None:
    """(input shape, number of classes) of a dataset option, without reading its files (None when
    unknown). ImageNet's class count is the full set's; the loaded folders decide the real one."""
    if cfg.name == "digits":
        return (64,), 10
    spec = SPECS.get(cfg.name)
    if spec is None:
        return None
    size = spec.size or int(cfg.get("image_size", 224))
    return (spec.channels, size, size), spec.num_classes
