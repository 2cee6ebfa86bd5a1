"""CIFAR's two official layouts: the binary batches and the python pickles (torchvision's)."""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path

import numpy as np

from growth.data.layouts.base import Arrays, CorruptData, Layout, files_text


class _CifarBatches(Layout):
    """A folder of train and test batch files (names differ between CIFAR-10 and CIFAR-100)."""

    def __init__(self, folder: str, train: list[str], test: list[str]):
        self.folder, self.train, self.test = folder, list(train), list(test)

    def files(self) -> str:
        return f"{self.folder}/{files_text(self.train)} and {files_text(self.test)}"

    def find(self, folder: Path) -> Path | None:
        path = folder / self.folder
        return path if path.is_dir() else None


class CifarBinary(_CifarBatches):
    """Official binary batches: records of <label byte(s)><1024 R><1024 G><1024 B>.

    CIFAR-100 records carry a coarse and a fine label byte (label_bytes=2); the fine label (the
    last) is used.
    """

    name = "cifar_binary"

    def __init__(self, folder: str, train: list[str], test: list[str], label_bytes: int):
        super().__init__(folder, train, test)
        self.label_bytes = label_bytes

    def describe(self) -> str:
        return f"cifar_binary: {self.files()}"

    def read(self, path: Path) -> tuple[Arrays, None]:
        return read_cifar_binary(path, self.train, self.test, self.label_bytes), None


class CifarPython(_CifarBatches):
    """torchvision's layout: pickled dicts with b'data' (N, 3072) uint8 and a label list."""

    name = "cifar_python"

    def __init__(self, folder: str, train: list[str], test: list[str], label_key: str):
        super().__init__(folder, train, test)
        self.label_key = label_key

    def describe(self) -> str:
        return f"cifar_python: {self.files()} (torchvision's layout)"

    def read(self, path: Path) -> tuple[Arrays, None]:
        return read_cifar_python(path, self.train, self.test, self.label_key), None


def read_cifar_binary(folder: Path, train_files: list[str], test_files: list[str], label_bytes: int) -> Arrays:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        if not path.is_file():
            raise CorruptData(path, "file is missing")
        data = np.fromfile(path, dtype=np.uint8)
        record = label_bytes + 3072
        if data.size == 0 or data.size % record:
            raise CorruptData(path, f"size {data.size} bytes is not a positive multiple of the {record}-byte record")
        rows = data.reshape(-1, record)
        pixels = np.ascontiguousarray(rows[:, label_bytes:]).reshape(-1, 3, 32, 32)
        return pixels, rows[:, label_bytes - 1].astype(np.int64)

    return _concat([read(f) for f in train_files]) + _concat([read(f) for f in test_files])


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# The only globals a CIFAR pickle needs: numpy array reconstruction and bytes re-encoding.
# Anything else (os.system, eval, ...) is refused, so loading a file cannot run its code.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("codecs", "encode"),
    ("builtins", "bytearray"): ("builtins", "bytearray"),
}


def _resolve_global(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        # numpy < 2 names the private package numpy.core
        return getattr(importlib.import_module(module.replace("numpy._core", "numpy.core")), name)


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        target = _SAFE_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a dataset pickle")
        return _resolve_global(*target)


def safe_unpickle(path: Path):
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(io.BufferedReader(f), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as e:
        raise CorruptData(path, f"not a readable CIFAR pickle ({type(e).__name__}: {e})") from None


def _field(d: dict, key: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def read_cifar_python(folder: Path, train_files: list[str], test_files: list[str], label_key: str) -> Arrays:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        if not path.is_file():
            raise CorruptData(path, "file is missing")
        d = safe_unpickle(path)
        if not isinstance(d, dict):
            raise CorruptData(path, f"holds a {type(d).__name__}, expected a dict")
        try:
            data, labels = _field(d, "data"), _field(d, label_key)
        except KeyError as e:
            raise CorruptData(path, f"has no {e.args[0]!r} entry") from None
        data = np.asarray(data)
        labels = np.asarray(labels)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            detail = f"data {data.dtype} {data.shape} with {len(labels)} labels; expected uint8 (N, 3072)"
            raise CorruptData(path, detail)
        return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)

    return _concat([read(f) for f in train_files]) + _concat([read(f) for f in test_files])
