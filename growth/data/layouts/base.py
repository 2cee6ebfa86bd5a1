"""What every file layout is: a way to find a dataset's files in a folder and to read them.

A layout reads uint8 (N, C, H, W) pixels and int64 labels (or, for class folders, a list of image
files). A reader raises :class:`CorruptData` with what is wrong; the dataset turns it into a
ConfigError that names the dataset, the path, the expected layout and how to get the data again.
"""

from __future__ import annotations

from os.path import commonprefix
from pathlib import Path

import numpy as np

from growth.data.damaged import DamagedFile

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, test_x, test_y


class CorruptData(Exception):
    def __init__(self, path: Path | str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = Path(path), detail


class DamagedImages(CorruptData):
    """Image files of a layout that cannot be decoded (all of them, found by decoding every one)."""

    def __init__(self, path: Path | str, damaged: list[DamagedFile]):
        super().__init__(path, f"{len(damaged)} damaged image file(s), the first {damaged[0].path}: {damaged[0].reason}")
        self.damaged = damaged


class Layout:
    """One on-disk layout of one dataset (an instance carries that dataset's file names).

    name: the value of ``dataset.format`` that asks for it.
    read_before_submission: whether a sweep or study reads it once before submitting (arrays of
        at most a few hundred MB); folders of images are only checked for their layout.
    """

    name: str = ""
    read_before_submission: bool = True

    def describe(self) -> str:
        """One line describing the layout, for error messages: '<name>: <files>'."""
        raise NotImplementedError

    def find(self, folder: Path) -> Path | None:
        """The path that holds this layout in `folder` (a few stat calls), or None."""
        raise NotImplementedError

    def holds_file(self, path: Path) -> bool:
        """Whether the layout can be the file `path` itself (dataset.root naming the file)."""
        return False

    def read(self, path: Path) -> tuple[Arrays, int | None]:
        """The arrays at a found `path`, and the number of classes when the files decide it
        (None: the dataset's own)."""
        raise NotImplementedError(f"the {self.name} layout holds files, not arrays")

    def read_images(self, path: Path, workers: int = 8) -> tuple[Arrays, int | None, list[DamagedFile]]:
        """As :meth:`read`, but an image that cannot be decoded is listed (its pixels zero) rather
        than refused. Only layouts of image files have damaged images."""
        arrays, num_classes = self.read(path)
        return arrays, num_classes, []

    def image_files(self, path: Path) -> list[Path] | None:
        """Every image file of the layout at `path` (train and test), for dataset.verify_images;
        None for layouts that hold arrays."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


def files_text(names: list[str]) -> str:
    """'data_batch_1..5.bin' for data_batch_1.bin ... data_batch_5.bin; a single name as it is."""
    if len(names) == 1:
        return names[0]
    first, last = names[0], names[-1]
    head = len(commonprefix([first, last]))
    tail = len(commonprefix([first[head:][::-1], last[head:][::-1]]))
    return f"{first[: len(first) - tail]}..{last[head : len(last) - tail]}{first[len(first) - tail :]}"

