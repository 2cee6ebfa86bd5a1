"""The npz layout: one prepared NumPy archive, ``<name>.npz``, the layout that loads fastest."""

from __future__ import annotations

import lzma
import zipfile
import zlib
from pathlib import Path

import numpy as np

from growth.data.layouts.base import Arrays, CorruptData, Layout

KEYS = ("train_x", "train_y", "test_x", "test_y")


class Npz(Layout):
    """``<stem>.npz`` with uint8 train_x, train_y, test_x, test_y; images N,H,W,C (N,H,W for one channel)."""

    name = "npz"

    def __init__(self, stem: str, channels: int):
        self.stem, self.channels = stem, channels

    def describe(self) -> str:
        shape = "N,H,W" if self.channels == 1 else "N,H,W,C"
        return f"npz: {self.stem}.npz with uint8 train_x, train_y, test_x, test_y (images {shape})"

    def find(self, folder: Path) -> Path | None:
        path = folder / f"{self.stem}.npz"
        return path if path.is_file() else None

    def holds_file(self, path: Path) -> bool:
        return path.suffix == ".npz"

    def read(self, path: Path) -> tuple[Arrays, None]:
        return read_npz(path, self.channels), None


def read_npz(path: Path, channels: int) -> Arrays:
    """A prepared array file with train_x, train_y, test_x, test_y; images N,H,W,C or N,H,W uint8."""
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in KEYS if k not in d.files]
            if missing:
                raise CorruptData(path, f"missing arrays {missing} (it has {sorted(d.files)})")
            arrays = [d[k] for k in KEYS]
    except CorruptData:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, lzma.LZMAError, zlib.error) as e:
        raise CorruptData(path, f"cannot be read as an .npz archive ({type(e).__name__}: {e})") from None
    train_x, train_y, test_x, test_y = arrays
    return _nchw(path, "train_x", train_x, channels), train_y, _nchw(path, "test_x", test_x, channels), test_y


def _nchw(path: Path, key: str, x: np.ndarray, channels: int) -> np.ndarray:
    if x.dtype != np.uint8:
        raise CorruptData(path, f"{key} has dtype {x.dtype}, expected uint8 pixels")
    if x.ndim == 3 and channels == 1:
        return x[:, None]
    if x.ndim == 4 and x.shape[3] == channels:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    layout = "N,H,W or N,H,W,1" if channels == 1 else f"N,H,W,{channels}"
    raise CorruptData(path, f"{key} has shape {x.shape}, expected {layout}")
