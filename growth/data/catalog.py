"""The image datasets: where their files may lie, which layouts are accepted, how to load them.

The data root is ``dataset.root``, else the environment variable GROWTH_DATA_ROOT, else ``data``
relative to the working directory. Under it a dataset is looked for in the root itself and in the
dataset's own folder names (``<root>/cifar10``, ``<root>/cifar-10``, ...), so both a per-dataset
tree and torchvision's shared root work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from growth.data.augment import CropFlip
from growth.data.formats import (
    IDX_FILES,
    CorruptData,
    idx_file,
    read_cifar_binary,
    read_cifar_python,
    read_idx,
    read_npz,
    read_tinyimagenet,
)
from growth.data.images import FolderImages, ImageArray, default_workers, labels_tensor
from growth.data.schema import DATA_PATHS
from growth.errors import ConfigError

ROOT_ENV = "GROWTH_DATA_ROOT"


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    dirs: tuple[str, ...]  # folder names searched under the root (besides the root itself)
    num_classes: int
    channels: int
    size: int  # height = width
    formats: tuple[str, ...]  # accepted layouts, in the order auto tries them
    torchvision: str | None  # the layout format=torchvision means
    get: str  # how to get the data, for error messages
    downloadable: bool = False


_CIFAR10_BIN = [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]
_CIFAR10_PY = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]

SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec(
            name="cifar10",
            title="CIFAR-10",
            dirs=("cifar10", "cifar-10", "CIFAR10"),
            num_classes=10,
            channels=3,
            size=32,
            formats=("npz", "cifar_binary", "cifar_python"),
            torchvision="cifar_python",
            get="set dataset.download=true (torchvision fetches cifar-10-batches-py), or unpack "
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (or -python.tar.gz) into {dir}",
            downloadable=True,
        ),
        Spec(
            name="cifar100",
            title="CIFAR-100",
            dirs=("cifar100", "cifar-100", "CIFAR100"),
            num_classes=100,
            channels=3,
            size=32,
            formats=("npz", "cifar_binary", "cifar_python"),
            torchvision="cifar_python",
            get="set dataset.download=true (torchvision fetches cifar-100-python), or unpack "
            "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz (or -python.tar.gz) into {dir}",
            downloadable=True,
        ),
        Spec(
            name="mnist",
            title="MNIST",
            dirs=("mnist", "MNIST"),
            num_classes=10,
            channels=1,
            size=28,
            formats=("npz", "idx"),
            torchvision="idx",
            get="set dataset.download=true (torchvision fetches MNIST/raw), or put the four IDX files "
            "(train-images-idx3-ubyte[.gz], ...) into {dir}",
            downloadable=True,
        ),
        Spec(
            name="fashion_mnist",
            title="Fashion-MNIST",
            dirs=("fashion_mnist", "fashion-mnist", "FashionMNIST"),
            num_classes=10,
            channels=1,
            size=28,
            formats=("npz", "idx"),
            torchvision="idx",
            get="set dataset.download=true (torchvision fetches FashionMNIST/raw), or put the four IDX "
            "files from https://github.com/zalandoresearch/fashion-mnist (data/fashion) into {dir}",
            downloadable=True,
        ),
        Spec(
            name="tinyimagenet",
            title="TinyImageNet",
            dirs=("tinyimagenet", "tiny-imagenet", "tiny-imagenet-200"),
            num_classes=200,
            channels=3,
            size=64,
            formats=("npz", "folders"),
            torchvision=None,
            get="set dataset.download=true, or unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip into {dir}",
            downloadable=True,
        ),
        Spec(
            name="imagenet",
            title="ImageNet (ILSVRC-2012)",
            dirs=("imagenet", "ImageNet", "ILSVRC2012", "imagenet-1k"),
            num_classes=1000,
            channels=3,
            size=0,  # files of any size, cropped by the transforms
            formats=("folders",),
            torchvision=None,
            get="download ILSVRC-2012 from https://image-net.org (registration needed), extract train/ into "
            "class folders and sort val/ into the same class folders (e.g. with the widely used valprep.sh), "
            "under {dir}",
        ),
    )
}

_TORCHVISION_DIR = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def resolve_root(root: str | None) -> Path:
    """dataset.root, else $GROWTH_DATA_ROOT, else ./data; ~ and $VARS are expanded."""
    chosen = root if root not in (None, "") else (os.environ.get(ROOT_ENV) or "data")
    return Path(os.path.expandvars(os.path.expanduser(str(chosen))))


def candidate_dirs(spec: Spec, root: Path) -> list[Path]:
    out = [root] + [root / d for d in spec.dirs]
    return list(dict.fromkeys(out))


def layout(spec: Spec, fmt: str) -> str:
    """One line describing an accepted layout, for error messages and docs."""
    if fmt == "npz":
        shape = "N,H,W" if spec.channels == 1 else "N,H,W,C"
        return f"npz: {spec.name}.npz with uint8 train_x, train_y, test_x, test_y (images {shape})"
    if fmt == "cifar_binary":
        if spec.name == "cifar10":
            return "cifar_binary: cifar-10-batches-bin/data_batch_1..5.bin and test_batch.bin"
        return "cifar_binary: cifar-100-binary/train.bin and test.bin"
    if fmt == "cifar_python":
        if spec.name == "cifar10":
            return "cifar_python: cifar-10-batches-py/data_batch_1..5 and test_batch (torchvision's layout)"
        return "cifar_python: cifar-100-python/train and test (torchvision's layout)"
    if fmt == "idx":
        tv = _TORCHVISION_DIR[spec.name]
        files = ", ".join(IDX_FILES.values())
        return f"idx: {files} (raw or .gz), in the folder itself, in raw/ or in {tv}/raw/ (torchvision's layout)"
    if fmt == "folders" and spec.name == "tinyimagenet":
        return (
            "folders: tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG "
            "and val/val_annotations.txt"
        )
    if fmt == "folders":
        return "folders: train/<class>/<image> and val/<class>/<image> (torchvision ImageFolder)"
    raise ValueError(fmt)


def _find(spec: Spec, fmt: str, folder: Path) -> Path | None:
    """The path that holds `fmt`'s layout in `folder`, or None."""
    if fmt == "npz":
        path = folder / f"{spec.name}.npz"
        return path if path.is_file() else None
    if fmt in ("cifar_binary", "cifar_python"):
        names = {
            ("cifar10", "cifar_binary"): "cifar-10-batches-bin",
            ("cifar100", "cifar_binary"): "cifar-100-binary",
            ("cifar10", "cifar_python"): "cifar-10-batches-py",
            ("cifar100", "cifar_python"): "cifar-100-python",
        }
        path = folder / names[(spec.name, fmt)]
        return path if path.is_dir() else None
    if fmt == "idx":
        for d in (folder / _TORCHVISION_DIR[spec.name] / "raw", folder / "raw", folder):
            if idx_file(d, IDX_FILES["train_x"]) is not None:
                return d
        return None
    if fmt == "folders" and spec.name == "tinyimagenet":
        for d in (folder, folder / "tiny-imagenet-200"):
            if (d / "wnids.txt").is_file():
                return d
        return None
    if fmt == "folders":
        return folder if (folder / "train").is_dir() and (folder / "val").is_dir() else None
    raise ValueError(fmt)


def _formats(spec: Spec, fmt: str) -> tuple[str, ...]:
    if fmt == "auto":
        return spec.formats
    if fmt == "torchvision":
        return (spec.torchvision,) if spec.torchvision else ()
    return (fmt,) if fmt in spec.formats else ()


def locate(spec: Spec, root: Path, fmt: str) -> tuple[str, Path] | None:
    if root.is_file() and root.suffix == ".npz" and "npz" in _formats(spec, fmt):
        return "npz", root
    for folder in candidate_dirs(spec, root):
        for f in _formats(spec, fmt):
            found = _find(spec, f, folder)
            if found is not None:
                return f, found
    return None


def _missing_message(spec: Spec, root: Path, fmt: str, extra: str = "") -> str:
    formats = _formats(spec, fmt)
    looked = ", ".join(str(d) for d in candidate_dirs(spec, root))
    layouts = "\n    ".join(layout(spec, f) for f in formats)
    get = spec.get.format(dir=root / spec.dirs[0])
    return (
        f"dataset {spec.name} ({spec.title}): no data in the {fmt} layout(s) under root {str(root)!r} "
        f"(absolute {root.resolve()}; set dataset.root=..., or {ROOT_ENV}; the default is ./data).\n"
        f"  Looked in: {looked}\n  Accepted layouts (in any of those folders):\n    {layouts}\n"
        f"  To get it: {get}{extra}"
    )


def _corrupt_message(spec: Spec, root: Path, fmt: str, err: CorruptData) -> str:
    get = spec.get.format(dir=root / spec.dirs[0])
    return (
        f"dataset {spec.name} ({spec.title}): {err.path} is corrupt or not in the expected layout: {err.detail}.\n"
        f"  Expected {layout(spec, fmt)}.\n  To get it again: {get}"
    )


def _download(spec: Spec, target: Path) -> None:
    """Fetch the dataset into `target` through torchvision (network access needed)."""
    try:
        import torchvision.datasets as tvd
        from torchvision.datasets.utils import download_and_extract_archive

        target.mkdir(parents=True, exist_ok=True)
        if spec.name == "tinyimagenet":
            download_and_extract_archive(
                "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                download_root=str(target),
                md5="90528d7ca1a48142e341f4ef8d21d0de",
            )
            return
        cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}
        for train in (True, False):
            cls[spec.name](str(target), train=train, download=True)
    except Exception as e:  # network, disk and checksum failures all leave the user the same choices
        raise ConfigError(
            f"dataset {spec.name}: download into {target} failed ({type(e).__name__}: {e}).\n"
            f"  To get it by hand: {spec.get.format(dir=target)}"
        ) from None


def option_problems(cfg) -> list[str]:
    """Invalid dataset options, as 'key=value is invalid: ...' lines (empty when all are valid)."""
    spec = SPECS.get(cfg.name)
    if spec is None:
        return []
    problems = []

    def bad(key: str, valid: str) -> None:
        problems.append(f"dataset.{key}={cfg.get(key)!r} is invalid: {valid}")

    fmt = cfg.get("format", "auto")
    valid_formats = ["auto", *spec.formats] + (["torchvision"] if spec.torchvision else [])
    if fmt not in valid_formats:
        bad("format", f"for {spec.name} one of {valid_formats}")
    data_path = cfg.get("data_path", "auto")
    if spec.name == "imagenet" and data_path == "device":
        bad("data_path", "imagenet is read from disk: auto or loader")
    elif data_path not in DATA_PATHS:
        bad("data_path", f"one of {list(DATA_PATHS)}")
    if cfg.get("num_workers") is not None and cfg.num_workers < 0:
        bad("num_workers", "null (min(8, CPUs)) or at least 0")
    for key in ("mean", "std"):
        value = cfg.get(key)
        if value is None and spec.name == "imagenet":
            bad(key, f"{spec.channels} per-channel values (ImageNet's are not computed from its files)")
        elif value is not None and len(value) != spec.channels:
            bad(key, f"null or {spec.channels} per-channel values")
    if cfg.get("std") is not None and any(s <= 0 for s in cfg.std):
        bad("std", "values above 0")
    if "crop_padding" in cfg and not (0 <= cfg.crop_padding < spec.size):
        bad("crop_padding", f"in [0, {spec.size})")
    if "image_size" in cfg and cfg.image_size < 1:
        bad("image_size", "at least 1")
    if "resize_size" in cfg and "image_size" in cfg and cfg.resize_size < cfg.image_size:
        bad("resize_size", "at least image_size")
    return problems


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 (N, C, H, W) pixels on the [0, 1] scale."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.zeros(256, dtype=np.int64)
        for start in range(0, len(x), 1024):  # bounded temporary memory
            counts += np.bincount(x[start : start + 1024, c].ravel(), minlength=256)
        n = counts.sum()
        mean = float(counts @ levels / n)
        var = float(counts @ (levels - mean) ** 2 / n)
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)


def _check(spec: Spec, path: Path, arrays, num_classes: int) -> None:
    train_x, train_y, test_x, test_y = arrays
    for key, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if len(x) == 0:
            raise CorruptData(path, f"the {key} split is empty")
        if len(x) != len(y):
            raise CorruptData(path, f"{len(x)} {key} images but {len(y)} labels")
        if tuple(x.shape[1:]) != (spec.channels, spec.size, spec.size):
            raise CorruptData(
                path, f"{key} images are {tuple(x.shape[1:])} (C,H,W), expected {(spec.channels, spec.size, spec.size)}"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise CorruptData(path, f"{key} labels have dtype {y.dtype}, expected integers")
        if y.min() < 0 or y.max() >= num_classes:
            raise CorruptData(path, f"{key} labels span [{y.min()}, {y.max()}], expected [0, {num_classes})")


def read_arrays(spec: Spec, fmt: str, path: Path):
    """(train_x, train_y, test_x, test_y, num_classes) from a located layout."""
    if fmt == "npz":
        arrays, n = read_npz(path, spec.channels), spec.num_classes
    elif fmt in ("cifar_binary", "cifar_python"):
        if spec.name == "cifar10":
            train, test = _CIFAR10_BIN if fmt == "cifar_binary" else _CIFAR10_PY
        else:
            train, test = (["train.bin"], ["test.bin"]) if fmt == "cifar_binary" else (["train"], ["test"])
        if fmt == "cifar_binary":
            arrays = read_cifar_binary(path, train, test, label_bytes=1 if spec.name == "cifar10" else 2)
        else:
            arrays = read_cifar_python(path, train, test, "labels" if spec.name == "cifar10" else "fine_labels")
        n = spec.num_classes
    elif fmt == "idx":
        arrays, n = read_idx(path), spec.num_classes
    elif fmt == "folders":
        arrays, wnids = read_tinyimagenet(path, spec.size)
        n = len(wnids)
    else:
        raise ValueError(fmt)
    train_x, train_y, test_x, test_y = arrays
    arrays = (train_x, np.asarray(train_y), test_x, np.asarray(test_y))
    _check(spec, path, arrays, n)
    return (*arrays, n)


def locate_or_fetch(spec: Spec, cfg) -> tuple[Path, str, Path]:
    root = resolve_root(cfg.get("root"))
    fmt = cfg.get("format", "auto")
    found = locate(spec, root, fmt)
    if found is None and cfg.get("download", False):
        if not spec.downloadable:
            raise ConfigError(_missing_message(spec, root, fmt, "\n  (dataset.download cannot fetch it)"))
        _download(spec, root / spec.dirs[0])
        found = locate(spec, root, fmt)
    if found is None:
        raise ConfigError(_missing_message(spec, root, fmt))
    return root, *found


def check_available(cfg) -> None:
    """Raise the ConfigError loading would raise for invalid options or absent data, without reading
    the data (cheap: a few stat calls), so a run can fail before it writes anything."""
    spec = SPECS.get(cfg.name)
    if spec is None:
        return
    problems = option_problems(cfg)
    if problems:
        raise ConfigError("invalid dataset options:\n  " + "\n  ".join(problems))
    root, fmt = resolve_root(cfg.get("root")), cfg.get("format", "auto")
    if locate(spec, root, fmt) is None and not (cfg.get("download", False) and spec.downloadable):
        raise ConfigError(_missing_message(spec, root, fmt))


# Layouts read in full before submission, keyed by path and file stamps: a sweep of hundreds of
# jobs on one dataset reads it once.
_READ_BEFORE: set[tuple] = set()


def _stamp(path: Path) -> tuple:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def check_readable(cfg) -> None:
    """Read the dataset's arrays once (at most a few hundred MB: CIFAR, MNIST-like) and raise the
    ConfigError loading would raise for a corrupt or mislabelled file, so a sweep or study finds
    it before it submits anything. Folders of images (TinyImageNet, ImageNet) are only checked
    for their layout (check_available): decoding every image is a run's work."""
    spec = SPECS.get(cfg.name)
    if spec is None:
        return
    root, fmt = resolve_root(cfg.get("root")), cfg.get("format", "auto")
    found = locate(spec, root, fmt)
    if found is None or found[0] == "folders":
        return  # absent (check_available says so, or a download will fetch it) or image folders
    fmt, path = found
    key = (str(path.resolve()), fmt, _stamp(path))
    if key in _READ_BEFORE:
        return
    try:
        read_arrays(spec, fmt, path)
    except CorruptData as e:
        raise ConfigError(_corrupt_message(spec, root, fmt, e)) from None
    _READ_BEFORE.add(key)


def load_image_dataset(cfg):
    """DatasetSplits of an image dataset held in memory as uint8 (everything but ImageNet)."""
    from growth.data.splits import DatasetSplits, stratified_split

    spec = SPECS[cfg.name]
    problems = option_problems(cfg)
    if problems:
        raise ConfigError("invalid dataset options:\n  " + "\n  ".join(problems))
    root, fmt, path = locate_or_fetch(spec, cfg)
    try:
        train_x, train_y, test_x, test_y, num_classes = read_arrays(spec, fmt, path)
    except CorruptData as e:
        raise ConfigError(_corrupt_message(spec, root, fmt, e)) from None
    keep, held = stratified_split(train_y, cfg.val_fraction, cfg.split_seed)
    val_x, val_y = train_x[held], train_y[held]
    train_x, train_y = train_x[keep], train_y[keep]
    if cfg.get("mean") is not None and cfg.get("std") is not None:
        mean, std = tuple(cfg.mean), tuple(cfg.std)
    else:
        mean, std = channel_stats(train_x)
        mean = tuple(cfg.mean) if cfg.get("mean") is not None else mean
        std = tuple(cfg.std) if cfg.get("std") is not None else std
    augment = None
    if cfg.get("augment", False) and (cfg.crop_padding > 0 or cfg.hflip):
        augment = CropFlip(int(cfg.crop_padding), bool(cfg.hflip))
    data_path = cfg.get("data_path", "auto")
    workers = default_workers() if cfg.get("num_workers") is None else int(cfg.num_workers)

    def images(x: np.ndarray, aug) -> ImageArray:
        # Writable and contiguous: arrays read straight from a file buffer are read-only.
        pixels = torch.from_numpy(np.require(x, dtype=np.uint8, requirements=["C", "W"]))
        return ImageArray(pixels, mean, std, augment=aug, data_path=data_path, num_workers=workers)

    return DatasetSplits(
        images(train_x, augment),
        labels_tensor(train_y),
        images(val_x, None),
        labels_tensor(val_y),
        images(test_x, None),
        labels_tensor(test_y),
        num_classes=num_classes,
        name=spec.name,
        source=f"{fmt}:{path}",
    )


def load_imagenet(cfg):
    """DatasetSplits of ImageNet class folders; images are read from disk by DataLoader workers."""
    from growth.data.splits import DatasetSplits, stratified_split

    spec = SPECS["imagenet"]
    problems = option_problems(cfg)
    if problems:
        raise ConfigError("invalid dataset options:\n  " + "\n  ".join(problems))
    root, fmt, path = locate_or_fetch(spec, cfg)
    try:
        train, test, classes = read_image_folders(path)
    except CorruptData as e:
        raise ConfigError(_corrupt_message(spec, root, fmt, e)) from None
    labels = np.asarray([label for _, label in train], dtype=np.int64)
    keep, held = stratified_split(labels, cfg.val_fraction, cfg.split_seed)
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
        name=spec.name,
        source=f"{fmt}:{path}",
    )


def read_image_folders(path: Path):
    """(train samples, val samples, classes) of train/<class>/* and val/<class>/* via torchvision."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(path / "train"))
    except (FileNotFoundError, OSError) as e:
        raise CorruptData(path / "train", f"no class folders ({e})") from None
    try:
        val_classes, _ = find_classes(str(path / "val"))
    except (FileNotFoundError, OSError) as e:
        raise CorruptData(path / "val", f"no class folders ({e})") from None
    if val_classes != classes:
        extra = sorted(set(val_classes) - set(classes))[:5]
        lacking = sorted(set(classes) - set(val_classes))[:5]
        raise CorruptData(path / "val", f"class folders differ from train/ (only in val: {extra}, missing: {lacking})")
    try:
        train = make_dataset(str(path / "train"), class_to_idx, extensions=IMG_EXTENSIONS)
        val = make_dataset(str(path / "val"), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as e:
        raise CorruptData(path, f"a class folder holds no image ({e})") from None
    return train, val, classes
