"""ImageNet (ILSVRC-2012) as class folders, read from disk by DataLoader workers every epoch; the
official val set is the test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from growth.config.checks import in_range, key
from growth.data.damaged import DamagedFile, drop_damaged, find_damaged
from growth.data.images import FolderImages, default_workers, labels_tensor
from growth.data.layouts import ClassFolders, CorruptData
from growth.data.schema import ImageFilesConfig
from growth.data.spec import ImageDataset, invalid, raise_invalid, register
from growth.data.splits import DatasetSplits, stratified_split
from growth.errors import ConfigError


@dataclass
class ImageNetConfig(ImageFilesConfig):
    """ImageNet as class folders, read from disk every epoch."""

    data_path: str = "loader"
    # Training crop (RandomResizedCrop) and evaluation crop (resize to resize_size, centre crop).
    # (At most 4096 pixels: the transforms allocate the resized image.)
    image_size: int = key(224, in_range(1, 4096, valid="pixels in [1, 4096]"))
    resize_size: int = key(256, in_range(1, 4096, valid="pixels in [1, 4096]"))
    mean: Optional[list[float]] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: Optional[list[float]] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass(frozen=True, eq=False)
class ImageNet(ImageDataset):
    """Files of any size, cropped to image_size by the transforms."""

    def shape(self, cfg) -> tuple[tuple[int, ...], int]:
        """The full set's class count; the loaded folders decide the real one."""
        size = int(cfg.get("image_size", 224))
        return (self.channels, size, size), self.num_classes

    def data_path_problem(self, data_path) -> str | None:
        if data_path == "device":
            return "imagenet is read from disk: auto or loader"
        return super().data_path_problem(data_path)

    def missing_stats_problem(self) -> str | None:
        return f"{self.channels} per-channel values (ImageNet's are not computed from its files)"

    def own_problems(self, cfg) -> list[str]:
        problems = []
        if "resize_size" in cfg and "image_size" in cfg and cfg.resize_size < cfg.image_size:
            problems.append(invalid(cfg, "resize_size", f"at least dataset.image_size={cfg.image_size}"))
        return problems

    def load(self, cfg) -> DatasetSplits:
        raise_invalid(self.problems(cfg))
        root, layout, path = self.locate_or_fetch(cfg)
        try:
            train, test, classes = layout.samples(path)
        except CorruptData as e:
            raise ConfigError(self.corrupt_message(root, layout, e)) from None
        train_files, test_files = [Path(p) for p, _ in train], [Path(p) for p, _ in test]
        # dataset.verify_images: every file decoded before anything runs, all damaged ones refused.
        self.verify_images(cfg, (layout, path), train_files + test_files)
        labels = np.asarray([label for _, label in train], dtype=np.int64)
        keep, held = stratified_split(labels, cfg.val_fraction, cfg.split_seed)
        damaged = []
        if cfg.get("on_damaged", "stop") == "skip":
            # Found once, as the run opens the dataset, and left out of every split: the batches
            # a run draws (and so its resume) are those of the healthy files alone.
            what, threads = self.files_what(path), self.loading_threads(cfg)
            for split, files, folder in (("train", train_files, "train/"), ("test", test_files, "val/")):
                index = {str(f): i for i, f in enumerate(files)}
                found = find_damaged(files, f"{what}, {folder}", threads)
                damaged += [DamagedFile(split, index[p], p, why) for p, why in found]
        keep, held, kept_test, skipped = drop_damaged(damaged, keep, held, len(test), self.files_what(path))
        if kept_test is not None:
            test = [test[i] for i in kept_test]
        workers = default_workers() if cfg.get("num_workers") is None else int(cfg.num_workers)

        def files(samples, augment: bool) -> FolderImages:
            return FolderImages(
                samples,
                cfg.mean,
                cfg.std,
                image_size=cfg.image_size,
                resize_size=cfg.resize_size,
                augment=augment,
                num_workers=workers,
            )

        val = [train[i] for i in held]
        train = [train[i] for i in keep]
        return DatasetSplits(
            files(train, bool(cfg.augment)),
            labels_tensor([s[1] for s in train]),
            files(val, False),
            labels_tensor([s[1] for s in val]),
            files(test, False),
            labels_tensor([s[1] for s in test]),
            num_classes=len(classes),
            name=self.name,
            source=f"{layout.name}:{path}",
            damaged=skipped,
        )


IMAGENET = register(
    ImageNet(
        name="imagenet",
        title="ImageNet (ILSVRC-2012)",
        dirs=("imagenet", "ImageNet", "ILSVRC2012", "imagenet-1k"),
        num_classes=1000,
        channels=3,
        size=0,  # files of any size, cropped by the transforms
        layouts=(ClassFolders(),),
        get="download ILSVRC-2012 from https://image-net.org (registration needed), extract train/ into "
        "class folders and sort val/ into the same class folders (e.g. with the widely used valprep.sh), "
        "under {dir}",
        classes_from_files=True,
    ),
    ImageNetConfig,
)
