"""Training augmentation: the device-side kernels and the torchvision transforms of the loader path.

Both paths draw the same distribution: a crop offset uniform over [0, 2 * padding] on each axis of
the zero-padded image, and a horizontal flip with probability 1/2 (torchvision's RandomCrop with
`padding` followed by RandomHorizontalFlip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CropFlip:
    """Random crop of the zero-padded image back to its size, then an optional horizontal flip."""

    padding: int
    hflip: bool = True

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Parameters of n samples as one (n, 3) long tensor: row offset, column offset, flip.

        Drawn on the generator's device, so a device generator keeps the draw on the device.
        """
        dev = generator.device
        offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator, device=dev)
        if self.hflip:
            flips = torch.randint(0, 2, (n, 1), generator=generator, device=dev)
        else:
            flips = torch.zeros((n, 1), dtype=torch.long, device=dev)
        return torch.cat([offsets, flips], dim=1)

    def apply(self, raw: torch.Tensor, idx: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Crop and flip images raw[idx] (uint8, N,C,H,W) with params (B, 3); uint8 (B,C,H,W).

        One gather reads every output pixel straight from the unpadded storage; pixels that fall
        in the padding read a clamped neighbour and are then set to 0.
        """
        _, c, h, w = raw.shape
        p = self.padding
        dev = raw.device
        ar_h = torch.arange(h, device=dev)
        ar_w = torch.arange(w, device=dev)
        rows = params[:, 0:1] - p + ar_h  # (B, H)
        cols_fwd = params[:, 1:2] - p + ar_w  # (B, W)
        cols_rev = params[:, 1:2] - p + (w - 1 - ar_w)
        cols = torch.where(params[:, 2:3].bool(), cols_rev, cols_fwd)
        valid = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :]
        out = raw[
            idx[:, None, None, None],
            torch.arange(c, device=dev)[None, :, None, None],
            rows.clamp(0, h - 1)[:, None, :, None],
            cols.clamp(0, w - 1)[:, None, None, :],
        ]
        return torch.where(valid, out, torch.zeros((), dtype=out.dtype, device=dev))

    def torchvision(self, size: tuple[int, int]):
        """The same augmentation as torchvision transforms on one uint8 (C,H,W) tensor."""
        from torchvision.transforms import v2

        steps = []
        if self.padding > 0:
            steps.append(v2.RandomCrop(size, padding=self.padding, fill=0, padding_mode="constant"))
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        return v2.Compose(steps) if steps else None


def normalize(u8: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 (B,C,H,W) -> float32 (x / 255 - mean) / std, with scale = 1 / (255 std), shift = -mean / std."""
    return torch.addcmul(shift, u8.float(), scale)


def normalizer(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * s)).float().view(1, -1, 1, 1).to(device)
    shift = (-m / s).float().view(1, -1, 1, 1).to(device)
    return scale, shift


def sample_seeds(base: int, n: int) -> np.ndarray:
    """n well-mixed 63-bit seeds from one base seed (splitmix64 of base + k)."""
    with np.errstate(over="ignore"):
        z = (np.uint64(base) + np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)


def seeded_call(transform, item, seed: int):
    """transform(item) with torch's global generator seeded by `seed`, restored afterwards.

    torchvision transforms draw from the global generator; seeding it per sample from the run's
    generator makes the loader path reproducible and independent of the number of workers.
    """
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only: torch.manual_seed would also reseed every accelerator (slow).
        torch.default_generator.manual_seed(int(seed))
        return transform(item)
