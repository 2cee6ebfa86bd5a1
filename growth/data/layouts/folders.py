"""Folders of image files: TinyImageNet's tree (decoded into arrays) and ImageFolder's class
folders (ImageNet; read from disk by DataLoader workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from growth.data.damaged import decode_errors, progress_map, reason
from growth.data.layouts.base import Arrays, CorruptData, DamagedFile, DamagedImages, Layout

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class TinyImageNetTree(Layout):
    """tiny-imagenet-200: wnids.txt, train/<wnid>/images/*, val/images/* + val/val_annotations.txt.

    Decoded into arrays of `size` x `size` RGB images; the number of classes is the wnids'.
    """

    name = "folders"
    read_before_submission = False  # decoding every image is a run's work

    def __init__(self, size: int, folder: str = "tiny-imagenet-200"):
        self.size, self.folder = size, folder

    def describe(self) -> str:
        return (
            f"folders: {self.folder}/ with wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG "
            "and val/val_annotations.txt"
        )

    def find(self, folder: Path) -> Path | None:
        for d in (folder, folder / self.folder):
            if (d / "wnids.txt").is_file():
                return d
        return None

    def read(self, path: Path) -> tuple[Arrays, int]:
        arrays, wnids = read_tinyimagenet(path, self.size)
        return arrays, len(wnids)

    def read_images(self, path: Path, workers: int = 8) -> tuple[Arrays, int, list[DamagedFile]]:
        arrays, wnids, damaged = read_tinyimagenet_keeping_damaged(path, self.size, workers)
        return arrays, len(wnids), damaged

    def image_files(self, path: Path) -> list[Path]:
        train, _, test, _, _ = tinyimagenet_files(path)
        return train + test


class ClassFolders(Layout):
    """train/<class>/<image> and val/<class>/<image>, by torchvision's ImageFolder rules."""

    name = "folders"
    read_before_submission = False

    def describe(self) -> str:
        return "folders: train/<class>/<image> and val/<class>/<image> (torchvision ImageFolder)"

    def find(self, folder: Path) -> Path | None:
        return folder if (folder / "train").is_dir() and (folder / "val").is_dir() else None

    def samples(self, path: Path):
        """(train samples, val samples, classes); a sample is (file, class index)."""
        return read_image_folders(path)

    def image_files(self, path: Path) -> list[Path]:
        train, val, _ = read_image_folders(path)
        return [Path(p) for p, _ in train + val]


def _decode(paths: list[Path], size: int, workers: int = 8, what: str = "") -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(pixels, damaged): every image decoded; a damaged one's (index, reason) is listed and its
    pixels left zero. An image of the wrong size is a layout problem (CorruptData)."""
    from PIL import Image

    out = np.zeros((len(paths), 3, size, size), dtype=np.uint8)

    def one(i: int) -> tuple[int, str] | None:
        try:
            with Image.open(paths[i]) as im:
                arr = np.asarray(im.convert("RGB"))
        except decode_errors() as e:
            return i, reason(e)
        if arr.shape != (size, size, 3):
            raise CorruptData(paths[i], f"image is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}")
        out[i] = arr.transpose(2, 0, 1)
        return None

    # PIL releases the GIL while decoding, so threads decode in parallel.
    results = progress_map(one, range(len(paths)), what or f"decoding {size}x{size} images", workers)
    damaged = [d for d in results if d is not None]
    return out, damaged


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def tinyimagenet_files(folder: Path) -> tuple[list[Path], list[int], list[Path], list[int], list[str]]:
    """(train files, train labels, test files, test labels, wnids) of a tiny-imagenet-200 tree,
    its layout checked (CorruptData); nothing is decoded."""
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
    return train_paths, train_y, test_paths, test_y, wnids


def read_tinyimagenet_keeping_damaged(
    folder: Path, size: int = 64, workers: int = 8
) -> tuple[Arrays, list[str], list[DamagedFile]]:
    """(arrays, wnids, damaged): every image decoded; a damaged one is listed, its pixels zero."""
    train_paths, train_y, test_paths, test_y, wnids = tinyimagenet_files(folder)
    train_x, bad_train = _decode(train_paths, size, workers, f"decoding the train images of {folder}")
    test_x, bad_test = _decode(test_paths, size, workers, f"decoding the val images of {folder}")
    damaged = [DamagedFile("train", i, str(train_paths[i]), why) for i, why in bad_train]
    damaged += [DamagedFile("test", i, str(test_paths[i]), why) for i, why in bad_test]
    arrays = (train_x, np.asarray(train_y, dtype=np.int64), test_x, np.asarray(test_y, dtype=np.int64))
    return arrays, wnids, damaged


def read_tinyimagenet(folder: Path, size: int = 64) -> tuple[Arrays, list[str]]:
    """Class indices follow the sorted wnids (ImageFolder's order); the official val set is the test
    split. Damaged images raise DamagedImages listing every one of them."""
    arrays, wnids, damaged = read_tinyimagenet_keeping_damaged(folder, size)
    if damaged:
        raise DamagedImages(folder, damaged)
    return arrays, wnids


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
