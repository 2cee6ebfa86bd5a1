"""Datasets with seeded, stratified train/validation/test splits.

Every dataset is an entry of the registry ``growth.kinds.DATASETS``, registered in its own module
of ``growth.data.sets`` with its schema and validator; the registered object (a
:class:`~growth.data.spec.Dataset`) gives its shape without reading files, checks its files are
there, reads them once before submission and loads the splits. File layouts are in
``growth.data.layouts``.

A dataset returns :class:`DatasetSplits`; the engine batches it with :class:`TensorBatches`
(or ``DatasetSplits.train_batches``), whose shuffling and augmentation draw from a generator the
run owns, so a resumed run continues the same stream. The embedded digits are float tensors; the
image datasets keep uint8 pixels and read as normalised float batches (docs/data.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from growth.data.images import FolderImages, ImageArray
from growth.data.sets.digits import load_digits
from growth.data.spec import Dataset, ImageDataset, resolve_root
from growth.data.splits import DatasetSplits, TensorBatches, stratified_split
from growth.kinds import DATASETS

__all__ = [
    "DATASETS",
    "SPECS",
    "Dataset",
    "DatasetSplits",
    "FolderImages",
    "ImageArray",
    "ImageDataset",
    "TensorBatches",
    "build_dataset",
    "check_dataset",
    "dataset_shape",
    "dataset_problems",
    "get_dataset",
    "load_digits",
    "resolve_root",
    "stratified_split",
]


class _Specs(Mapping):
    """name -> ImageDataset of every registered dataset read from files (all but the digits)."""

    def _all(self) -> dict[str, ImageDataset]:
        return {e.name: e.obj for e in DATASETS.entries() if isinstance(e.obj, ImageDataset)}

    def __getitem__(self, name: str) -> ImageDataset:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


SPECS: Mapping[str, ImageDataset] = _Specs()


def get_dataset(name: str) -> Dataset:
    """The registered dataset `name` (ConfigError naming the valid ones when unknown)."""
    return DATASETS.get(name)


def dataset_problems(cfg) -> list[str]:
    """Invalid values among the dataset options (checked before a run directory is written); the
    dataset's own validator, given the dataset section."""
    if cfg.name not in DATASETS:
        return []
    return get_dataset(cfg.name).problems(cfg)


def check_dataset(cfg, read: bool = False) -> None:
    """Fail early (ConfigError) when the dataset's options are invalid or its files are absent.

    Cheap (no data are read): meant to run before a run directory is written. With `read`, the
    arrays of the in-memory datasets are read once too (before a sweep or study submits), so a
    corrupt file is found then rather than in every job.
    """
    dataset = get_dataset(cfg.name)
    dataset.check_available(cfg)
    if read:
        dataset.check_readable(cfg)


def build_dataset(cfg) -> DatasetSplits:
    return get_dataset(cfg.name).load(cfg)


def dataset_shape(cfg) -> tuple[tuple[int, ...], int] | None:
    """(input shape, number of classes) of a dataset option, without reading its files (None when
    unknown). ImageNet's class count is the full set's; the loaded folders decide the real one."""
    if cfg.name not in DATASETS:
        return None
    return get_dataset(cfg.name).shape(cfg)
