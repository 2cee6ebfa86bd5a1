"""Config schemas shared by the image datasets (subclasses of growth.config.DatasetConfig).

A dataset registers one of these (or its own subclass, as ImageNet does in
growth.data.sets.imagenet) as its schema; its validator checks the values (growth.data.spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from growth.config import DatasetConfig
from growth.config.checks import in_range, key, one_of
from growth.data.damaged import ON_DAMAGED

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
    num_workers: Optional[int] = key(None, in_range(0, 1024, nullable=True, valid="null (min(8, CPUs)) or a worker count in [0, 1024]"))
    # Per-channel normalisation on the [0, 1] scale; null: computed on the training split.
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None


@dataclass
class ArrayImageConfig(ImageDatasetConfig):
    """Datasets held in memory as uint8 arrays (CIFAR, MNIST-like, TinyImageNet)."""

    # Zero padding on every side before the random crop back to the image size; 0: no crop.
    crop_padding: int = 4
    hflip: bool = True



@dataclass
class ImageFilesConfig(ImageDatasetConfig):
    """Datasets read from image files (TinyImageNet's folder tree, ImageNet's class folders):
    what to do about damaged images (growth.data.damaged, docs/data.md)."""

    # Open and fully decode every image (train and test) before anything runs: when a run opens
    # the dataset and when a sweep or study checks its jobs before submitting; any damaged file
    # refuses, all of them listed. It changes nothing a run computes (not in a run's identity).
    verify_images: bool = key(False)
    # A damaged image met by a run: stop (the run stops with a message naming the file) or skip
    # (the run finds the damaged images when it opens the dataset, leaves them out and records
    # them in summary.json as damaged_images).
    on_damaged: str = key("stop", one_of(*ON_DAMAGED))


@dataclass
class TinyImageNetConfig(ArrayImageConfig, ImageFilesConfig):
    """TinyImageNet: held in memory as arrays, read from a folder tree of images (or an npz)."""
