"""The train/validation/test splits every dataset loader returns, and their batching."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from growth.data.images import FolderImages, ImageArray

# A split's inputs: a float tensor (digits) or a uint8 image split that reads as float.
Inputs = Union[torch.Tensor, ImageArray, FolderImages]
_X_KEYS = ("train_x", "val_x", "test_x")
_Y_KEYS = ("train_y", "val_y", "test_y")


@dataclass
class DatasetSplits:
    train_x: Any  # Inputs
    train_y: torch.Tensor
    val_x: Any
    val_y: torch.Tensor
    test_x: Any
    test_y: torch.Tensor
    num_classes: int
    name: str
    # Where the data were read from ("<format>:<path>"); empty for embedded data.
    source: str = ""
    # Damaged image files left out (dataset.on_damaged=skip): {split, path, reason} each.
    damaged: list = dataclasses.field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def device(self) -> torch.device:
        """Where batches land."""
        return self.train_x.device

    @property
    def num_train(self) -> int:
        return len(self.train_x)

    def example_input(self) -> torch.Tensor:
        """One normalised float training input (1, *input_shape), without augmentation."""
        return self.train_x[:1]

    def to(self, device: torch.device | str) -> "DatasetSplits":
        device = torch.device(device)
        path = self._resolve_data_path(device)
        moved: dict[str, Any] = {}
        for k in _X_KEYS:
            x = getattr(self, k)
            moved[k] = x.to(device) if torch.is_tensor(x) else x.to(device, data_path=path)
        for k in _Y_KEYS:
            moved[k] = getattr(self, k).to(device)
        return dataclasses.replace(self, **moved)

    def _resolve_data_path(self, device: torch.device) -> str | None:
        """data_path=auto: the device path when the uint8 splits take at most half the free device memory."""
        arrays = [getattr(self, k) for k in _X_KEYS if isinstance(getattr(self, k), ImageArray)]
        if not arrays or arrays[0].data_path != "auto":
            return None
        if device.type != "cuda":
            return "device"
        free, _ = torch.cuda.mem_get_info(device)
        return "device" if sum(a.nbytes for a in arrays) <= 0.5 * free else "loader"

    def train_batches(
        self, batch_size: int, generator: torch.Generator, shard: tuple[int, int] = (0, 1)
    ) -> "TensorBatches":
        """Shuffled (and, where configured, augmented) normalised training batches; one epoch per
        iteration. With ``shard=(rank, world)``, this rank's share of every global batch."""
        return TensorBatches(self.train_x, self.train_y, batch_size, generator, shard)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The `split` ("val" or "test", or "train") in order, as normalised float batches."""
        x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
        if torch.is_tensor(x):
            return ((x[s : s + batch_size], y[s : s + batch_size]) for s in range(0, len(x), batch_size))
        return x.eval_batches(y, batch_size)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of every class held out, chosen by a seeded permutation."""
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(fraction * len(idx)))
        held.append(idx[:n_held])
    held_out = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(labels)), held_out)
    return keep, held_out


class TensorBatches:
    """Shuffled mini-batches of a training split; one epoch per iteration.

    Plain tensors are batched here; image splits (uint8 storage) produce their own augmented,
    normalised batches, on the device or through a DataLoader. Every random draw comes from
    `generator`, so a resumed run continues the same stream.

    ``shard=(rank, world)``: every rank draws the same global batches from the same generator and
    keeps samples ``rank, rank + world, ...`` of each (data-parallel training); ``len`` stays the
    number of global batches.
    """

    def __init__(
        self, x: Inputs, y: torch.Tensor, batch_size: int, generator: torch.Generator, shard: tuple[int, int] = (0, 1)
    ):
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator
        self.shard = shard

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not torch.is_tensor(self.x):
            yield from self.x.train_batches(self.y, self.batch_size, self.generator, shard=self.shard)
            return
        rank, world = self.shard
        perm = torch.randperm(len(self.x), generator=self.generator, device=self.generator.device)
        perm = perm.to(self.x.device)
        for start in range(0, len(perm), self.batch_size):
            idx = perm[start : start + self.batch_size][rank::world]
            yield self.x[idx], self.y[idx]
