"""Image datasets held in memory as uint8 arrays (CIFAR, MNIST-like, TinyImageNet): reading a
layout's arrays and checking them, reading them once before submission, and loading the splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from growth.data.augment import CropFlip
from growth.data.images import ImageArray, default_workers, labels_tensor
from growth.data.damaged import damaged_message, drop_damaged
from growth.data.layouts.base import CorruptData, DamagedImages, Layout
from growth.data.spec import ImageDataset, invalid, raise_invalid, resolve_root
from growth.data.splits import DatasetSplits, stratified_split
from growth.errors import ConfigError

# Layouts read in full before submission, keyed by path and file stamps: a sweep of hundreds of
# jobs on one dataset reads it once.
_READ_BEFORE: set[tuple] = set()


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 (N, C, H, W) pixels on the [0, 1] scale."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.zeros(256, dtype=np.int64)
        for start in range(0, len(x), 1024):  # bounded temporary memory
            counts += np.bincount(x[start : start + 1024, c].ravel(), minlength=256)
        n = counts.sum()
        mean = float(counts @ levels / n)
        var = float(counts @ (levels - mean) ** 2 / n)
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)


def _stamp(path: Path) -> tuple:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)


@dataclass(frozen=True, eq=False)
class ArrayImages(ImageDataset):
    """A dataset whose every split fits in memory as uint8 (N, C, H, W)."""

    def own_problems(self, cfg) -> list[str]:
        if "crop_padding" in cfg and not (0 <= cfg.crop_padding < self.size):
            return [invalid(cfg, "crop_padding", f"in [0, {self.size})")]
        return []

    def read_arrays(self, layout: Layout, path: Path):
        """(train_x, train_y, test_x, test_y, num_classes) from a located layout, checked; damaged
        images raise DamagedImages (a CorruptData) listing all of them."""
        *arrays, damaged = self.read_arrays_keeping_damaged(layout, path)
        if damaged:
            raise DamagedImages(path, damaged)
        return tuple(arrays)

    def read_arrays_keeping_damaged(self, layout: Layout, path: Path, workers: int = 8):
        """(train_x, train_y, test_x, test_y, num_classes, damaged): as read_arrays, but images
        that cannot be decoded are listed (DamagedFile; their pixels zero) rather than refused."""
        (train_x, train_y, test_x, test_y), num_classes, damaged = layout.read_images(path, workers)
        arrays = (train_x, np.asarray(train_y), test_x, np.asarray(test_y))
        num_classes = self.num_classes if num_classes is None else num_classes
        self._check(path, arrays, num_classes)
        return (*arrays, num_classes, damaged)

    def _check(self, path: Path, arrays, num_classes: int) -> None:
        train_x, train_y, test_x, test_y = arrays
        expected = (self.channels, self.size, self.size)
        for key, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            if len(x) == 0:
                raise CorruptData(path, f"the {key} split is empty")
            if len(x) != len(y):
                raise CorruptData(path, f"{len(x)} {key} images but {len(y)} labels")
            if tuple(x.shape[1:]) != expected:
                raise CorruptData(path, f"{key} images are {tuple(x.shape[1:])} (C,H,W), expected {expected}")
            if not np.issubdtype(y.dtype, np.integer):
                raise CorruptData(path, f"{key} labels have dtype {y.dtype}, expected integers")
            if y.min() < 0 or y.max() >= num_classes:
                raise CorruptData(path, f"{key} labels span [{y.min()}, {y.max()}], expected [0, {num_classes})")

    def check_readable(self, cfg) -> None:
        """Read the arrays once (at most a few hundred MB: CIFAR, MNIST-like) and raise the
        ConfigError loading would raise for a corrupt or mislabelled file, so a sweep or study
        finds it before it submits anything. Folders of images (TinyImageNet) are only checked for
        their layout (check_available): decoding every image is a run's work, unless
        dataset.verify_images asks for it."""
        self.verify_images(cfg)
        root, fmt = resolve_root(cfg.get("root")), cfg.get("format", "auto")
        found = self.locate(root, fmt)
        if found is None or not found[0].read_before_submission:
            return  # absent (check_available says so, or a download will fetch it) or image folders
        layout, path = found
        key = (str(path.resolve()), layout.name, _stamp(path))
        if key in _READ_BEFORE:
            return
        try:
            self.read_arrays(layout, path)
        except CorruptData as e:
            raise ConfigError(self.corrupt_message(root, layout, e)) from None
        _READ_BEFORE.add(key)

    def load(self, cfg) -> DatasetSplits:
        raise_invalid(self.problems(cfg))
        root, layout, path = self.locate_or_fetch(cfg)
        try:
            train_x, train_y, test_x, test_y, num_classes, damaged = self.read_arrays_keeping_damaged(
                layout, path, self.loading_threads(cfg)
            )
        except CorruptData as e:
            raise ConfigError(self.corrupt_message(root, layout, e)) from None
        # Every image of a folder tree is decoded here, so all the damaged ones are known at once.
        if damaged and cfg.get("on_damaged", "stop") != "skip":
            refused_by = "verify_images" if cfg.get("verify_images") else "on_damaged"
            files = [(d.path, d.reason) for d in damaged]
            raise ConfigError(damaged_message(files, self.files_what(path), refused_by, self.get_again(root)))
        keep, held = stratified_split(train_y, cfg.val_fraction, cfg.split_seed)
        keep, held, kept_test, skipped = drop_damaged(damaged, keep, held, len(test_x), self.files_what(path))
        if kept_test is not None:
            test_x, test_y = test_x[kept_test], test_y[kept_test]
        val_x, val_y = train_x[held], train_y[held]
        train_x, train_y = train_x[keep], train_y[keep]
        if cfg.get("mean") is not None and cfg.get("std") is not None:
            mean, std = tuple(cfg.mean), tuple(cfg.std)
        else:
            mean, std = channel_stats(train_x)
            mean = tuple(cfg.mean) if cfg.get("mean") is not None else mean
            std = tuple(cfg.std) if cfg.get("std") is not None else std
        augment = None
        if cfg.get("augment", False) and (cfg.crop_padding > 0 or cfg.hflip):
            augment = CropFlip(int(cfg.crop_padding), bool(cfg.hflip))
        data_path = cfg.get("data_path", "auto")
        workers = default_workers() if cfg.get("num_workers") is None else int(cfg.num_workers)

        def images(x: np.ndarray, aug) -> ImageArray:
            # Writable and contiguous: arrays read straight from a file buffer are read-only.
            pixels = torch.from_numpy(np.require(x, dtype=np.uint8, requirements=["C", "W"]))
            return ImageArray(pixels, mean, std, augment=aug, data_path=data_path, num_workers=workers)

        return DatasetSplits(
            images(train_x, augment),
            labels_tensor(train_y),
            images(val_x, None),
            labels_tensor(val_y),
            images(test_x, None),
            labels_tensor(test_y),
            num_classes=num_classes,
            name=self.name,
            source=f"{layout.name}:{path}",
            damaged=skipped,
        )
