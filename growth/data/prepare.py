"""Convert a dataset from any accepted layout into the npz layout, which loads fastest.

    python -m growth.data.prepare tinyimagenet [--root DIR] [--out FILE]

Decoding TinyImageNet's 110,000 JPEG files takes minutes; its npz loads in seconds. The output
defaults to <root>/<name>/<name>.npz, which format=auto then finds before any other layout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from growth.data.damaged import damaged_message
from growth.data.layouts import CorruptData, DamagedImages
from growth.data.loaders import ArrayImages
from growth.errors import ConfigError
from growth.kinds import DATASETS


def convertible() -> list[str]:
    """The datasets held in memory as arrays (ImageNet's class folders are read from disk)."""
    return [name for name in DATASETS.names() if isinstance(DATASETS.get(name), ArrayImages)]


def to_file_layout(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> N,H,W for one channel, else N,H,W,C: the layout the npz readers expect."""
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def prepare(name: str, root: str | None = None, out: str | None = None, fmt: str = "auto") -> Path:
    from omegaconf import OmegaConf

    if name not in convertible():
        raise ConfigError(f"{name!r} cannot be converted: one of {convertible()}")
    dataset = DATASETS.get(name)
    cfg = OmegaConf.create({"name": name, "root": root, "format": fmt, "download": False})
    data_root, layout, path = dataset.locate_or_fetch(cfg)
    if layout.name == "npz" and out is None:
        return path
    try:
        train_x, train_y, test_x, test_y, _ = dataset.read_arrays(layout, path)
    except DamagedImages as e:
        raise ConfigError(damaged_message([(d.path, d.reason) for d in e.damaged], dataset.files_what(path), None)) from None
    except CorruptData as e:
        raise ConfigError(f"{e.path}: {e.detail}") from None
    target = Path(out) if out else data_root / dataset.dirs[0] / f"{name}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        train_x=to_file_layout(train_x),
        train_y=train_y.astype(np.int64),
        test_x=to_file_layout(test_x),
        test_y=test_y.astype(np.int64),
    )
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=convertible())
    parser.add_argument("--root", default=None, help="data root (default: $GROWTH_DATA_ROOT or ./data)")
    parser.add_argument("--out", default=None, help="output file (default: <root>/<name>/<name>.npz)")
    parser.add_argument("--format", default="auto", help="layout to read (default: the first one found)")
    args = parser.parse_args(argv)
    try:
        print(prepare(args.name, args.root, args.out, args.format))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
