"""Damaged image files of the folder datasets (TinyImageNet's tree, ImageNet's class folders).

An image is damaged when PIL cannot open and fully decode it (a truncated file, bytes that are no
image). Two dataset keys decide what happens (docs/data.md):

* ``dataset.verify_images=true`` decodes every image before anything runs (when a run opens the
  dataset, and when a sweep or study checks its jobs before submitting) and refuses with one
  ConfigError listing every damaged file.
* ``dataset.on_damaged=skip`` leaves the damaged images out of the run: the dataset finds them
  once when the run opens it, drops them from its splits (after the train/validation split, so
  every other file stays where it would be) and records them (``DatasetSplits.damaged``, written
  into summary.json). ``stop`` (the default) stops the run with a message naming the file:
  ImageNet at the first damaged image a batch meets (read in DataLoader workers, the message is
  raised in the main process as it is), TinyImageNet as it opens (it decodes every image then,
  so all of them are listed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

from growth.errors import ConfigError

log = logging.getLogger("growth")

ON_DAMAGED = ("stop", "skip")
LISTED = 20  # damaged files a message lists; the rest are counted
PROGRESS_EVERY_S = 15.0  # seconds between progress lines of a long verification

# What every message about damaged images tells the user to do.
REMEDY = "replace the file(s) or re-extract the dataset"
KEYS_HINT = (
    "dataset.on_damaged=skip leaves damaged images out of the run; dataset.verify_images=true finds them all "
    "before anything runs"
)


class DamagedFile(NamedTuple):
    """An image file that PIL cannot decode: its split of the files ("train" or "test"), its index
    among that split's files, its path and why."""

    split: str
    index: int
    path: str
    reason: str


class DamagedImage(ConfigError):
    """One damaged image met while a run reads its files (e.g. in a DataLoader worker)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(
            f"image file {path} is damaged ({reason}): replace it or re-extract the dataset.\n  ({KEYS_HINT})"
        )
        self.path, self.reason = str(path), reason

    def __reduce__(self):
        return type(self), (self.path, self.reason)


def decode_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for a file it cannot decode (UnidentifiedImageError is an OSError)."""
    return (OSError, ValueError, SyntaxError, EOFError)


def reason(e: BaseException) -> str:
    """Why an image could not be decoded, in the words every message uses."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "not an image PIL can identify"
    return f"{type(e).__name__}: {e}"


def image_problem(path: str | Path) -> str | None:
    """Why the image at `path` cannot be read (None when PIL opens and fully decodes it)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except decode_errors() as e:
        return reason(e)
    return None


def say(message: str) -> None:
    """A progress line, as a run's progress lines go (growth.context.RunContext.progress)."""
    if log.isEnabledFor(logging.INFO) and logging.getLogger().handlers:
        log.info(message)
    else:
        print(message, flush=True)


def progress_map(fn: Callable, items: Sequence, what: str, workers: int = 8) -> list:
    """[fn(item) for item in items], in threads (PIL releases the GIL while decoding), with a
    progress line every PROGRESS_EVERY_S while it lasts (none for short work)."""
    n = len(items)
    start = last = time.monotonic()
    out = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, result in enumerate(pool.map(fn, items), 1):
            out.append(result)
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S and done < n:
                last = now
                say(f"{what}: {done}/{n} image files ({100 * done / n:.0f}%) in {now - start:.0f} s")
    return out


def find_damaged(paths: Sequence[str | Path], what: str, workers: int = 8) -> list[tuple[str, str]]:
    """(path, reason) of every damaged image among `paths`, in their order; decodes them all,
    saying so first and last, with progress lines in between."""
    say(f"verifying the {len(paths)} image files of {what}")
    start = time.monotonic()
    problems = progress_map(image_problem, paths, f"verifying {what}", workers)
    found = [(str(path), problem) for path, problem in zip(paths, problems) if problem is not None]
    say(f"verified the {len(paths)} image files of {what} in {time.monotonic() - start:.1f} s: {len(found)} damaged")
    return found


def listed(damaged: Sequence[tuple[str, str]], limit: int = LISTED) -> str:
    """One indented line per damaged file ('path: reason'), at most `limit`, then how many more."""
    lines = [f"  {path}: {reason}" for path, reason in damaged[:limit]]
    if len(damaged) > limit:
        lines.append(f"  ... and {len(damaged) - limit} more")
    return "\n".join(lines)


def damaged_message(damaged: Sequence[tuple[str, str]], what: str, key: str | None, get: str = "") -> str:
    """The ConfigError text for damaged images found by decoding all of them: the first line names
    the key that refused them (dataset.verify_images, dataset.on_damaged, or none) and what to do,
    then one line per file, then how to get the dataset again (`get`)."""
    count = f"{len(damaged)} damaged image file{'s' if len(damaged) != 1 else ''} in {what}"
    if key == "verify_images":
        head = (
            f"dataset.verify_images=true found {count}: {REMEDY}, or leave them out of the run with "
            "dataset.on_damaged=skip (and verify_images=false)"
        )
    elif key == "on_damaged":
        head = f"dataset.on_damaged=stop: {count}: {REMEDY}, or leave them out of the run with dataset.on_damaged=skip"
    else:
        head = f"{count}: {REMEDY}"
    return f"{head}\n{listed(damaged)}" + (f"\n  To get it again: {get}" if get else "")


def drop_damaged(
    damaged: Sequence[DamagedFile], keep: np.ndarray, held: np.ndarray, n_test: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[dict]]:
    """on_damaged=skip: (train indices, validation indices, test indices or None for all, records)
    with the damaged images left out. `keep` and `held` are the train/validation split of all the
    training files, so every other file stays in the split it has without damaged files. A record
    is {split: train|val|test, path, reason}, in the order of `damaged`. A split left without any
    image is refused."""
    if not damaged:
        return keep, held, None, []
    bad_train = {d.index for d in damaged if d.split == "train"}
    bad_test = {d.index for d in damaged if d.split == "test"}
    in_val = set(held.tolist())

    def split_of(d: DamagedFile) -> str:
        return "test" if d.split == "test" else "val" if d.index in in_val else "train"

    records = [{"split": split_of(d), "path": d.path, "reason": d.reason} for d in damaged]
    keep = np.asarray([i for i in keep.tolist() if i not in bad_train], dtype=np.int64)
    held = np.asarray([i for i in held.tolist() if i not in bad_train], dtype=np.int64)
    test = np.asarray([i for i in range(n_test) if i not in bad_test], dtype=np.int64)
    files = listed([(r["path"], r["reason"]) for r in records])
    left = {"train": len(keep), "val": len(held), "test": len(test)}
    for split, n in left.items():
        lost = sum(r["split"] == split for r in records)
        if lost and n == 0:
            raise ConfigError(
                f"every image of the {split} split of {what} is damaged ({lost}; dataset.on_damaged=skip leaves "
                f"nothing to {'train on' if split == 'train' else 'evaluate'}): {REMEDY}\n{files}"
            )
    plural = "s" if len(records) != 1 else ""
    say(
        f"{what}: leaving out {len(records)} damaged image file{plural} "
        f"(dataset.on_damaged=skip; summary.json lists them as damaged_images)\n{files}"
    )
    return keep, held, test, records


def verify_options_problem(cfg) -> str | None:
    """verify_images refuses damaged images, on_damaged=skip leaves them out: not both."""
    if cfg.get("verify_images", False) and cfg.get("on_damaged", "stop") == "skip":
        return (
            "dataset.verify_images=true is invalid with dataset.on_damaged=skip: verification refuses damaged "
            "images, skip leaves them out of the run (and finds them when the run opens the dataset); set one of them"
        )
    return None
