"""Config schemas shared by the image datasets (subclasses of growth.config.DatasetConfig).

A dataset registers one of these (or its own subclass, as ImageNet does in
growth.data.sets.imagenet) as its schema; its validator checks the values (growth.data.spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from growth.config import DatasetConfig

DATA_PATHS = ("auto", "device", "loader")


@dataclass
class ImageDatasetConfig(DatasetConfig):
    # Which on-disk layout to read; auto takes the first one found (docs/data.md lists them).
    # torchvision means torchvision's own layout (cifar-10-batches-py pickles, MNIST/raw IDX).
    format: str = "auto"
    # Training augmentation (random crop with padding + flip; RandomResizedCrop + flip for ImageNet).
    augment: bool = True
    # device: the whole split lives on the training device as uint8, augmented there in batched
    # kernels; loader: a torch DataLoader with workers and pinned memory; auto: device when the
    # uint8 data fit comfortably in the device's free memory, else loader.
    data_path: str = "auto"
    # Fetch the data through torchvision when it is missing (needs network access).
    download: bool = False
    # DataLoader workers (loader path only); null: min(8, CPUs).
    num_workers: Optional[int] = None
    # Per-channel normalisation on the [0, 1] scale; null: computed on the training split.
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None


@dataclass
class ArrayImageConfig(ImageDatasetConfig):
    """Datasets held in memory as uint8 arrays (CIFAR, MNIST-like, TinyImageNet)."""

    # Zero padding on every side before the random crop back to the image size; 0: no crop.
    crop_padding: int = 4
    hflip: bool = True

