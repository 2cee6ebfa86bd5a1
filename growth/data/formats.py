"""Readers of the on-disk layouts users have; each returns uint8 (N, C, H, W) pixels and int64 labels.

A reader raises :class:`CorruptData` with what is wrong; the caller turns it into a ConfigError
that names the dataset, the path, the expected layout and how to get the data again.
"""

from __future__ import annotations

import gzip
import importlib
import io
import lzma
import pickle
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, test_x, test_y
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class CorruptData(Exception):
    def __init__(self, path: Path | str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = Path(path), detail


# --------------------------------------------------------------------------- npz


def read_npz(path: Path, channels: int) -> Arrays:
    """A prepared array file with train_x, train_y, test_x, test_y; images N,H,W,C or N,H,W uint8."""
    keys = ("train_x", "train_y", "test_x", "test_y")
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in keys if k not in d.files]
            if missing:
                raise CorruptData(path, f"missing arrays {missing} (it has {sorted(d.files)})")
            arrays = [d[k] for k in keys]
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


# --------------------------------------------------------------------------- CIFAR binary


def read_cifar_binary(folder: Path, train_files: list[str], test_files: list[str], label_bytes: int) -> Arrays:
    """Official binary batches: records of <label byte(s)><1024 R><1024 G><1024 B>.

    CIFAR-100 records carry a coarse and a fine label byte; the fine label (the last) is used.
    """

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


# --------------------------------------------------------------------------- CIFAR python pickles

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
    """torchvision's layout: pickled dicts with b'data' (N, 3072) uint8 and a label list."""

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


# --------------------------------------------------------------------------- MNIST IDX

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


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


# --------------------------------------------------------------------------- TinyImageNet folders


def _decode(paths: list[Path], size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        try:
            with Image.open(paths[i]) as im:
                arr = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise CorruptData(paths[i], f"unreadable image ({type(e).__name__}: {e})") from None
        if arr.shape != (size, size, 3):
            raise CorruptData(paths[i], f"image is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}")
        out[i] = arr.transpose(2, 0, 1)

    # PIL releases the GIL while decoding, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(len(paths))))
    return out


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_tinyimagenet(folder: Path, size: int = 64) -> tuple[Arrays, list[str]]:
    """tiny-imagenet-200: wnids.txt, train/<wnid>/images/*, val/images/* + val/val_annotations.txt.

    Class indices follow the sorted wnids (ImageFolder's order); the official val set is the test split.
    """
    wnids_file = folder / "wnids.txt"
    try:
        wnids = sorted({w.strip() for w in wnids_file.read_text().split() if w.strip()})
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptData(wnids_file, f"unreadable ({e})") from None
    if not wnids:
        raise CorruptData(wnids_file, "lists no class")
    index = {w: i for i, w in enumerate(wnids)}
    train_paths, train_y = [], []
    for w in wnids:
        images = folder / "train" / w / "images"
        if not images.is_dir():
            raise CorruptData(images, f"folder of class {w} is missing")
        found = _images_in(images)
        if not found:
            raise CorruptData(images, f"folder of class {w} holds no image")
        train_paths += found
        train_y += [index[w]] * len(found)
    ann = folder / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise CorruptData(ann, "file is missing")
    test_paths, test_y = [], []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise CorruptData(ann, f"line {n} {line!r}: expected '<file>\\t<wnid>...' with a wnid from wnids.txt")
        path = folder / "val" / "images" / parts[0]
        if not path.is_file():
            raise CorruptData(path, f"listed in {ann.name} line {n} but missing")
        test_paths.append(path)
        test_y.append(index[parts[1]])
    if not test_paths:
        raise CorruptData(ann, "lists no image")
    arrays = (
        _decode(train_paths, size),
        np.asarray(train_y, dtype=np.int64),
        _decode(test_paths, size),
        np.asarray(test_y, dtype=np.int64),
    )
    return arrays, wnids
