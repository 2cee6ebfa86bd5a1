"""MNIST's IDX files (raw or gzip), in the folder itself, in raw/ or in torchvision's <Name>/raw/."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from growth.data.layouts.base import Arrays, CorruptData, Layout

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


class Idx(Layout):
    """The four IDX files; `torchvision_dir` is torchvision's folder of the dataset (MNIST, FashionMNIST)."""

    name = "idx"

    def __init__(self, torchvision_dir: str):
        self.torchvision_dir = torchvision_dir

    def describe(self) -> str:
        files = ", ".join(IDX_FILES.values())
        return (
            f"idx: {files} (raw or .gz), in the folder itself, in raw/ or in {self.torchvision_dir}/raw/ "
            "(torchvision's layout)"
        )

    def find(self, folder: Path) -> Path | None:
        for d in (folder / self.torchvision_dir / "raw", folder / "raw", folder):
            if idx_file(d, IDX_FILES["train_x"]) is not None:
                return d
        return None

    def read(self, path: Path) -> tuple[Arrays, None]:
        return read_idx(path), None


def idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx_file(path: Path, ndim: int) -> np.ndarray:
    """One IDX file (raw or gzip): big-endian magic 0x0000 08 <ndim>, ndim int32 sizes, uint8 data."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptData(path, f"cannot be read or decompressed ({type(e).__name__}: {e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        raise CorruptData(path, f"bad IDX header {raw[:4].hex()}, expected 000008{ndim:02x} (uint8, {ndim} dims)")
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise CorruptData(path, f"holds {len(raw) - header} data bytes, the header {dims} says {int(np.prod(dims))}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(folder: Path) -> Arrays:
    out = []
    for key, stem in IDX_FILES.items():
        path = idx_file(folder, stem)
        if path is None:
            raise CorruptData(folder / stem, "file is missing (raw or .gz)")
        arr = read_idx_file(path, 3 if key.endswith("_x") else 1)
        out.append(arr[:, None] if key.endswith("_x") else arr.astype(np.int64))
    return tuple(out)  # type: ignore[return-value]
