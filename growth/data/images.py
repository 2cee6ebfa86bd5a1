"""Image splits that store uint8 pixels and read as normalised float32 batches.

:class:`ImageArray` holds a whole split in memory (N, C, H, W) uint8, on the training device
(the device path) or on the host behind a DataLoader (the loader path). :class:`FolderImages` reads
image files from disk through a DataLoader (ImageNet). Both behave like a float tensor where the
engine needs one (``len(x)``, ``x.shape``, ``x.device``, ``x[a:b]``), and both yield shuffled,
augmented, normalised training batches from the run's generator.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from growth.data.augment import CropFlip, normalize, normalizer, sample_seeds, seeded_call
from growth.data.damaged import DamagedImage, decode_errors, reason


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy without a host-device synchronisation: a pageable host tensor would make the copy wait."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _loader_items(n: int, generator: torch.Generator | None) -> list[tuple[int, int]]:
    """(index, seed) pairs of one epoch: a permutation and one augmentation seed per sample."""
    if generator is None:
        return [(i, 0) for i in range(n)]
    perm = torch.randperm(n, generator=generator, device=generator.device).cpu()
    base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return list(zip(perm.tolist(), sample_seeds(base, n).tolist()))


def _loader_batches(dataset, items, batch_size, num_workers, device, scale, shift, shard=(0, 1)):
    # This rank's share of every global batch; each rank loads only its own samples.
    rank, world = shard
    batches = [items[s : s + batch_size][rank::world] for s in range(0, len(items), batch_size)]
    # A private generator: DataLoader draws its worker base seed from the global generator
    # otherwise, which would shift every later draw of the run.
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
        collate_fn=_collate,
    )
    for batch in loader:
        if isinstance(batch, _Damaged):
            raise DamagedImage(batch.path, batch.reason)
        xb, yb = batch
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        yield normalize(xb, scale, shift), yb


class _ArraySamples(Dataset):
    """Samples of a host uint8 array for the DataLoader; an item is an (index, seed) pair."""

    def __init__(self, raw: torch.Tensor, labels: torch.Tensor, transform):
        self.raw, self.labels, self.transform = raw, labels, transform

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, item):
        i, seed = item
        img = self.raw[i]
        if self.transform is not None:
            img = seeded_call(self.transform, img, seed)
        return img, self.labels[i]


class ImageArray:
    """A split of uint8 images (N, C, H, W) that reads as normalised float32.

    ``raw`` is the storage; ``device`` is where batches land (the same device on the device path,
    the training device while ``raw`` stays on the host on the loader path). ``augment`` is the
    training augmentation (set on the training split only).
    """

    dtype = torch.float32
    ndim = 4

    def __init__(
        self,
        raw: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        augment: CropFlip | None = None,
        data_path: str = "device",
        num_workers: int = 0,
        device: torch.device | str | None = None,
    ):
        if raw.dtype != torch.uint8 or raw.ndim != 4:
            raise ValueError(f"ImageArray needs uint8 (N, C, H, W) pixels, got {raw.dtype} {tuple(raw.shape)}")
        if not (len(mean) == len(std) == raw.shape[1]):
            raise ValueError(f"mean/std need {raw.shape[1]} channels, got {len(mean)} and {len(std)}")
        self.raw = raw
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = augment
        self.data_path = data_path
        self.num_workers = int(num_workers)
        self.device = torch.device(device) if device is not None else raw.device
        self._scale, self._shift = normalizer(self.mean, self.std, self.device)

    # ----------------------------------------------------------- tensor-like reading

    @property
    def shape(self) -> torch.Size:
        return self.raw.shape

    def __len__(self) -> int:
        return self.raw.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        if torch.is_tensor(idx):
            idx = idx.to(self.raw.device)
        u8 = self.raw[idx]
        single = u8.ndim == 3
        out = normalize(u8.to(self.device, non_blocking=True), self._scale, self._shift)
        return out[0] if single else out

    def to(self, device, data_path: str | None = None) -> "ImageArray":
        """The split for training on `device`: its storage moves there unless on the loader path."""
        device = torch.device(device)
        path = self.data_path if data_path is None else data_path
        storage = self.raw.cpu() if path == "loader" else self.raw.to(device)
        return ImageArray(
            storage,
            self.mean,
            self.std,
            augment=self.augment,
            data_path=path,
            num_workers=self.num_workers,
            device=device,
        )

    @property
    def nbytes(self) -> int:
        return self.raw.numel() * self.raw.element_size()

    # ----------------------------------------------------------- batches

    def train_batches(self, y: torch.Tensor, batch_size: int, generator: torch.Generator, shard=(0, 1)) -> Iterator:
        """One epoch of shuffled, augmented, normalised (x, y) batches (this rank's share of each
        global batch: samples rank, rank + world, ... of it)."""
        if self.data_path == "loader":
            return self._loader_train_batches(y, batch_size, generator, shard)
        return self._device_train_batches(y, batch_size, generator, shard)

    def _device_train_batches(self, y, batch_size, generator, shard):
        # Every random draw of the epoch happens up front from the run's generator (on its
        # device), then moves to the data once: no host round trip per step.
        n = len(self)
        perm = _to_device(torch.randperm(n, generator=generator, device=generator.device), self.raw.device)
        params = _to_device(self.augment.draw(n, generator), self.raw.device) if self.augment is not None else None
        y = y.to(self.raw.device)
        rank, world = shard
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size][rank::world]
            if params is None:
                u8 = self.raw[idx]
            else:
                u8 = self.augment.apply(self.raw, idx, params[start : start + batch_size][rank::world])
            yield normalize(u8.to(self.device, non_blocking=True), self._scale, self._shift), y[idx].to(self.device)

    def _loader_train_batches(self, y, batch_size, generator, shard):
        transform = self.augment.torchvision(tuple(self.raw.shape[2:])) if self.augment is not None else None
        samples = _ArraySamples(self.raw.cpu(), y.cpu(), transform)
        items = _loader_items(len(self), generator)
        yield from _loader_batches(samples, items, batch_size, self.num_workers, self.device, self._scale, self._shift, shard)

    def eval_batches(self, y: torch.Tensor, batch_size: int) -> Iterator:
        y = y.to(self.device)
        for start in range(0, len(self), batch_size):
            yield self[start : start + batch_size], y[start : start + batch_size]

    def __repr__(self) -> str:
        return (
            f"ImageArray({tuple(self.shape)}, storage={self.raw.device}, device={self.device}, "
            f"path={self.data_path}, augment={self.augment})"
        )


# --------------------------------------------------------------------- image files (ImageNet)


def open_rgb(path: str):
    """The image at `path` as an RGB PIL image; DamagedImage (a ConfigError naming it) when PIL
    cannot decode it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except decode_errors() as e:
        raise DamagedImage(path, reason(e)) from None


class _Damaged:
    """A damaged sample, as a DataLoader worker hands it back."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason


def _collate(items):
    """default_collate, except that a batch holding a damaged sample comes back as that _Damaged."""
    for item in items:
        if isinstance(item, _Damaged):
            return item
    return default_collate(items)


class _FileSamples(Dataset):
    """Image files for the DataLoader; an item is an (index, seed) pair (seed 0: no augmentation)."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform, seeded: bool):
        self.samples, self.transform, self.seeded = samples, transform, seeded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        i, seed = item
        path, label = self.samples[i]
        try:
            img = open_rgb(path)
        except DamagedImage as e:
            # Returned, not raised: torch would re-raise it in the main process wrapped in the
            # worker's traceback text; _loader_batches raises it there as it is.
            return _Damaged(e.path, e.reason)
        img = seeded_call(self.transform, img, seed) if self.seeded else self.transform(img)
        return img, label


def imagenet_transforms(image_size: int, resize_size: int, augment: bool):
    """(train, eval) torchvision transforms from a PIL image to uint8 (3, S, S)."""
    from torchvision.transforms import v2

    eval_t = v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(image_size), v2.PILToTensor()])
    if not augment:
        return eval_t, eval_t
    train_t = v2.Compose(
        [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip(p=0.5), v2.PILToTensor()]
    )
    return train_t, eval_t


class FolderImages:
    """A split of image files read through a DataLoader (workers, pinned memory) every epoch."""

    dtype = torch.float32
    ndim = 4
    data_path = "loader"

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        image_size: int,
        resize_size: int,
        augment: bool,
        num_workers: int,
        device: torch.device | str = "cpu",
    ):
        self.samples = list(samples)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.image_size, self.resize_size, self.augment = int(image_size), int(resize_size), bool(augment)
        self.num_workers = int(num_workers)
        self.device = torch.device(device)
        self._scale, self._shift = normalizer(self.mean, self.std, self.device)
        self._train_t, self._eval_t = imagenet_transforms(self.image_size, self.resize_size, self.augment)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.samples), 3, self.image_size, self.image_size))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx) -> torch.Tensor:
        """Evaluation view of the indexed images, read one by one (eval_batches reads in parallel)."""
        if isinstance(idx, int):
            return self[[idx]][0]
        if isinstance(idx, slice):
            indices = range(len(self.samples))[idx]
        else:
            indices = torch.as_tensor(idx).reshape(-1).tolist()
        u8 = torch.stack([self._eval_t(open_rgb(self.samples[i][0])) for i in indices])
        return normalize(u8.to(self.device), self._scale, self._shift)

    def to(self, device, data_path: str | None = None) -> "FolderImages":
        return FolderImages(
            self.samples,
            self.mean,
            self.std,
            image_size=self.image_size,
            resize_size=self.resize_size,
            augment=self.augment,
            num_workers=self.num_workers,
            device=device,
        )

    def train_batches(self, y: torch.Tensor, batch_size: int, generator: torch.Generator, shard=(0, 1)) -> Iterator:
        data = _FileSamples(self.samples, self._train_t, seeded=True)
        items = _loader_items(len(self), generator)
        return _loader_batches(data, items, batch_size, self.num_workers, self.device, self._scale, self._shift, shard)

    def eval_batches(self, y: torch.Tensor, batch_size: int) -> Iterator:
        data = _FileSamples(self.samples, self._eval_t, seeded=False)
        items = _loader_items(len(self), None)
        return _loader_batches(data, items, batch_size, self.num_workers, self.device, self._scale, self._shift)

    def __repr__(self) -> str:
        return f"FolderImages({len(self)} files, {self.image_size}px, device={self.device}, augment={self.augment})"


def labels_tensor(labels) -> torch.Tensor:
    return torch.as_tensor(np.asarray(labels, dtype=np.int64))
