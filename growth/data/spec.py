"""What a dataset is: the object registered in growth.kinds.DATASETS, and the spec of a dataset
whose files lie on disk (where they may lie, which layouts are accepted, how to get them).

The data root is ``dataset.root``, else the environment variable GROWTH_DATA_ROOT, else ``data``
relative to the working directory. Under it a dataset is looked for in the root itself and in the
dataset's own folder names (``<root>/cifar10``, ``<root>/cifar-10``, ...), so both a per-dataset
tree and torchvision's shared root work.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from growth.data.damaged import damaged_message, find_damaged, verify_options_problem
from growth.data.layouts.base import CorruptData, Layout
from growth.data.schema import DATA_PATHS
from growth.errors import ConfigError
from growth.kinds import DATASETS

ROOT_ENV = "GROWTH_DATA_ROOT"

# The damaged files of every set of image files verified in this process (dataset.verify_images),
# keyed by path, layout and a hash of the files' names, sizes and times: a sweep of hundreds of jobs
# on one dataset decodes it once, whether it passes or not.
_VERIFIED: dict[tuple, list[tuple[str, str]]] = {}


def resolve_root(root: str | None) -> Path:
    """dataset.root, else $GROWTH_DATA_ROOT, else ./data; ~ and $VARS are expanded."""
    chosen = root if root not in (None, "") else (os.environ.get(ROOT_ENV) or "data")
    return Path(os.path.expandvars(os.path.expanduser(str(chosen))))


def register(dataset: "Dataset", schema: type) -> "Dataset":
    """Register `dataset` under its name with its schema (conf/dataset/<name>.yaml names
    ``<name>_schema``) and its validator."""
    DATASETS.add(dataset.name, dataset, schema=schema, validate=dataset.validate)
    return dataset


class Dataset:
    """A registered dataset. `cfg` is the dataset section, except for :meth:`validate`."""

    name: str  # its registry name (dataset.name)
    # The loaded files decide the number of classes (a subset's folders may hold fewer).
    classes_from_files: bool = False

    def shape(self, cfg) -> tuple[tuple[int, ...], int]:
        """(input shape, number of classes), without reading any file."""
        raise NotImplementedError

    def problems(self, cfg) -> list[str]:
        """Invalid options, as 'dataset.<key>=<value> is invalid: ...' lines (empty when valid)."""
        return []

    def validate(self, cfg) -> list[str]:
        """The registry's validator: it gets the whole composed config."""
        return self.problems(cfg.dataset)

    def check_available(self, cfg) -> None:
        """Raise the ConfigError loading would raise for invalid options or absent data, cheaply."""
        raise_invalid(self.problems(cfg))

    def check_readable(self, cfg) -> None:
        """Read what is cheap to read once (before a sweep or study submits), so a corrupt file
        is found then rather than in every job."""

    def load(self, cfg):
        """The DatasetSplits of this dataset."""
        raise NotImplementedError


def raise_invalid(problems: list[str]) -> None:
    if problems:
        raise ConfigError("invalid dataset options:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, eq=False)
class ImageDataset(Dataset):
    """A dataset of images read from files under the data root."""

    name: str
    title: str
    dirs: tuple[str, ...]  # folder names searched under the root (besides the root itself)
    num_classes: int
    channels: int
    size: int  # height = width; 0: files of any size, cropped by the transforms
    layouts: tuple[Layout, ...]  # accepted layouts, in the order format=auto tries them
    get: str  # how to get the data, for error messages ({dir}: the dataset's folder)
    torchvision: str | None = None  # the layout format=torchvision means
    download: Callable[[Path], None] | None = None  # fetches the files into a folder
    classes_from_files: bool = False

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(layout.name for layout in self.layouts)

    @property
    def downloadable(self) -> bool:
        return self.download is not None

    def shape(self, cfg) -> tuple[tuple[int, ...], int]:
        return (self.channels, self.size, self.size), self.num_classes

    # ------------------------------------------------------------------ options

    def problems(self, cfg) -> list[str]:
        problems = []
        fmt = cfg.get("format", "auto")
        valid_formats = ["auto", *self.formats] + (["torchvision"] if self.torchvision else [])
        if fmt not in valid_formats:
            problems.append(invalid(cfg, "format", f"for {self.name} one of {valid_formats}"))
        valid = self.data_path_problem(cfg.get("data_path", "auto"))
        if valid:
            problems.append(invalid(cfg, "data_path", valid))
        if cfg.get("num_workers") is not None and cfg.num_workers < 0:
            problems.append(invalid(cfg, "num_workers", "null (min(8, CPUs)) or at least 0"))
        for key in ("mean", "std"):
            value = cfg.get(key)
            if value is None:
                valid = self.missing_stats_problem()
                if valid:
                    problems.append(invalid(cfg, key, valid))
            elif len(value) != self.channels:
                problems.append(invalid(cfg, key, f"null or {self.channels} per-channel values"))
        if cfg.get("std") is not None and any(s <= 0 for s in cfg.std):
            problems.append(invalid(cfg, "std", "values above 0"))
        both = verify_options_problem(cfg)
        if both:
            problems.append(both)
        return problems + self.own_problems(cfg)

    def data_path_problem(self, data_path) -> str | None:
        """What is valid, when `data_path` is not."""
        return None if data_path in DATA_PATHS else f"one of {list(DATA_PATHS)}"

    def missing_stats_problem(self) -> str | None:
        """What is valid, when mean or std is null and the files cannot give it (None: they can)."""
        return None

    def own_problems(self, cfg) -> list[str]:
        """Problems with the options of this kind of dataset only."""
        return []

    # ------------------------------------------------------------------ files

    def layouts_for(self, fmt: str) -> tuple[Layout, ...]:
        if fmt == "auto":
            return self.layouts
        if fmt == "torchvision":
            fmt = self.torchvision or ""
        return tuple(layout for layout in self.layouts if layout.name == fmt)

    def candidate_dirs(self, root: Path) -> list[Path]:
        return list(dict.fromkeys([root] + [root / d for d in self.dirs]))

    def locate(self, root: Path, fmt: str) -> tuple[Layout, Path] | None:
        layouts = self.layouts_for(fmt)
        if root.is_file():
            for layout in layouts:
                if layout.holds_file(root):
                    return layout, root
        for folder in self.candidate_dirs(root):
            for layout in layouts:
                found = layout.find(folder)
                if found is not None:
                    return layout, found
        return None

    def locate_or_fetch(self, cfg) -> tuple[Path, Layout, Path]:
        """(root, layout, path) of the data, downloading them first when asked and missing."""
        root = resolve_root(cfg.get("root"))
        fmt = cfg.get("format", "auto")
        found = self.locate(root, fmt)
        if found is None and cfg.get("download", False):
            if not self.downloadable:
                raise ConfigError(self.missing_message(root, fmt, "\n  (dataset.download cannot fetch it)"))
            self.fetch(root / self.dirs[0])
            found = self.locate(root, fmt)
        if found is None:
            raise ConfigError(self.missing_message(root, fmt))
        return root, *found

    def fetch(self, target: Path) -> None:
        try:
            target.mkdir(parents=True, exist_ok=True)
            self.download(target)
        except Exception as e:  # network, disk and checksum failures all leave the user the same choices
            raise ConfigError(
                f"dataset {self.name}: download into {target} failed ({type(e).__name__}: {e}).\n"
                f"  To get it by hand: {self.get.format(dir=target)}"
            ) from None

    def check_available(self, cfg) -> None:
        """Invalid options or absent data (a few stat calls; nothing is read)."""
        raise_invalid(self.problems(cfg))
        root, fmt = resolve_root(cfg.get("root")), cfg.get("format", "auto")
        if self.locate(root, fmt) is None and not (cfg.get("download", False) and self.downloadable):
            raise ConfigError(self.missing_message(root, fmt))

    def check_readable(self, cfg) -> None:
        """Before a sweep or study submits: dataset.verify_images decodes every image file."""
        self.verify_images(cfg)

    # ------------------------------------------------------------------ damaged images

    def loading_threads(self, cfg) -> int:
        """Threads that decode image files while the dataset is opened: dataset.num_workers, else
        min(8, CPUs)."""
        workers = cfg.get("num_workers")
        return int(workers) if workers else min(8, os.cpu_count() or 1)

    def verify_images(self, cfg, found: tuple[Layout, Path] | None = None, files: Sequence[Path] | None = None) -> None:
        """dataset.verify_images=true: open and fully decode every image file (train and test) of
        the located layout, and refuse with one ConfigError listing every damaged one. Nothing for
        layouts of arrays, or when the data are absent (check_available says so). `found` and
        `files`: the layout and its image files, when the caller has them."""
        if not cfg.get("verify_images", False):
            return
        root = resolve_root(cfg.get("root"))
        found = found if found is not None else self.locate(root, cfg.get("format", "auto"))
        if found is None:
            return
        layout, path = found
        if files is None:
            try:
                files = layout.image_files(path)
            except CorruptData as e:
                raise ConfigError(self.corrupt_message(root, layout, e)) from None
        if files is None:
            return
        key = (str(path.resolve()), layout.name, _files_stamp(files))
        if key not in _VERIFIED:
            _VERIFIED[key] = find_damaged(files, self.files_what(path), self.loading_threads(cfg))
        if _VERIFIED[key]:
            raise ConfigError(damaged_message(_VERIFIED[key], self.files_what(path), "verify_images", self.get_again(root)))

    def get_again(self, root: Path) -> str:
        """How to get the dataset's files again, for messages about damaged or corrupt ones."""
        return self.get.format(dir=root / self.dirs[0])

    def files_what(self, path: Path) -> str:
        """The dataset's files, as messages about them name them."""
        return f"dataset {self.name} ({self.title}) at {path}"

    # ------------------------------------------------------------------ messages

    def missing_message(self, root: Path, fmt: str, extra: str = "") -> str:
        looked = ", ".join(str(d) for d in self.candidate_dirs(root))
        layouts = "\n    ".join(layout.describe() for layout in self.layouts_for(fmt))
        get = self.get.format(dir=root / self.dirs[0])
        return (
            f"dataset {self.name} ({self.title}): no data in the {fmt} layout(s) under root {str(root)!r} "
            f"(absolute {root.resolve()}; set dataset.root=..., or {ROOT_ENV}; the default is ./data).\n"
            f"  Looked in: {looked}\n  Accepted layouts (in any of those folders):\n    {layouts}\n"
            f"  To get it: {get}{extra}"
        )

    def corrupt_message(self, root: Path, layout: Layout, err: CorruptData) -> str:
        get = self.get.format(dir=root / self.dirs[0])
        return (
            f"dataset {self.name} ({self.title}): {err.path} is corrupt or not in the expected layout: {err.detail}.\n"
            f"  Expected {layout.describe()}.\n  To get it again: {get}"
        )


def _files_stamp(files: Sequence[Path]) -> str:
    """A hash of the files' paths, sizes and modification times (one stat each; nothing read)."""
    h = hashlib.sha256()
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()


def invalid(cfg, key: str, valid: str) -> str:
    """The line that names an invalid dataset option and what is valid."""
    return f"dataset.{key}={cfg.get(key)!r} is invalid: {valid}"
