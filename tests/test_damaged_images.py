"""Damaged images in the folder datasets (TinyImageNet's tree, ImageNet's class folders).

Each test builds a tiny real dataset in tmp_path: real PNG and JPEG files written with PIL in the
layout the loader reads, plus one truncated JPEG and one file of garbage bytes with an image
extension. Nothing is mocked: PIL decodes, torch's DataLoader (with worker processes) reads.

* dataset.verify_images=true refuses before anything runs or is submitted, naming every damaged file;
* without it, a run that meets a damaged image stops with one message naming the file (no
  worker traceback text), and writes nothing before it knows;
* dataset.on_damaged=skip leaves the damaged files out, deterministically and without moving any
  other file between splits, and counts them in the run's summary.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from growth.data import build_dataset, check_dataset
from growth.data.damaged import DamagedImage, damaged_message
from growth.errors import ConfigError
from growth.records import run_name
from growth.run import prepare, run
from tests.conftest import FAST, compose_cfg

TINY_CLASSES = ("n01", "n02", "n03")


def _save(path: Path, rng, size, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path, format=fmt)


def _truncate(path: Path) -> None:
    """Keep the first half of a real JPEG: PIL opens it, then fails to decode it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an image, whatever its name says\n" * 8)


def write_tiny(root: Path, seed: int = 0) -> Path:
    """A healthy three-class tiny-imagenet-200 tree (8 train images a class, 6 val images)."""
    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_CLASSES) + "\n")
    for w in TINY_CLASSES:
        for k in range(8):
            _save(base / "train" / w / "images" / f"{w}_{k}.JPEG", rng, (64, 64), "JPEG" if k < 2 else "PNG")
    lines = []
    for k in range(6):
        _save(base / "val" / "images" / f"val_{k}.JPEG", rng, (64, 64), "PNG")
        lines.append(f"val_{k}.JPEG\t{TINY_CLASSES[k % 3]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def damage_tiny(base: Path) -> tuple[Path, Path]:
    """Truncate one train JPEG and overwrite one val image with garbage: (truncated, garbage)."""
    truncated = base / "train" / "n02" / "images" / "n02_1.JPEG"
    garbage = base / "val" / "images" / "val_4.JPEG"
    _truncate(truncated)
    _garbage(garbage)
    return truncated, garbage


def write_imagenet(root: Path, seed: int = 0) -> Path:
    """Healthy ImageNet-style class folders: train/<class>/* (8 a class), val/<class>/* (3 a class)."""
    rng = np.random.default_rng(seed)
    base = root / "imagenet"
    for split, n in (("train", 8), ("val", 3)):
        for c in ("cat", "dog"):
            for k in range(n):
                fmt, ext = ("JPEG", "jpg") if k % 2 == 0 else ("PNG", "png")
                _save(base / split / c / f"{k}.{ext}", rng, (24, 30), fmt)
    return base


def damage_imagenet(base: Path) -> tuple[Path, Path]:
    truncated = base / "train" / "cat" / "4.jpg"  # in the training split (cat/2.jpg is held out)
    garbage = base / "val" / "dog" / "1.png"
    _truncate(truncated)
    _garbage(garbage)
    return truncated, garbage


IMAGENET_SMALL = ["dataset.image_size=16", "dataset.resize_size=20"]


def dataset_overrides(name: str, root: Path, *extra: str) -> list[str]:
    small = IMAGENET_SMALL if name == "imagenet" else []
    return [f"dataset={name}", f"dataset.root={root}", *small, *extra]


def make_damaged(name: str, root: Path) -> tuple[Path, Path]:
    if name == "tinyimagenet":
        return damage_tiny(write_tiny(root))
    return damage_imagenet(write_imagenet(root))


def run_cfg(name: str, root: Path, results: Path, *extra: str):
    return compose_cfg(
        [*FAST, "method=dense", "trainer.epochs=1", "trainer.device=cpu", *dataset_overrides(name, root, *extra)],
        tmp_path=results,
    )


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------- the files are really damaged


def test_the_damaged_files_are_what_pil_cannot_decode(tmp_path):
    """The fixtures' premise: PIL decodes every other file and fails on these two."""
    truncated, garbage = damage_tiny(write_tiny(tmp_path))
    for path in (truncated, garbage):
        with pytest.raises(OSError):
            with Image.open(path) as im:
                im.load()
    healthy = [p for p in files_under(tmp_path / "tiny-imagenet-200") if p.suffix == ".JPEG" and p not in (truncated, garbage)]
    assert len(healthy) == 3 * 8 + 6 - 2
    for path in healthy:
        with Image.open(path) as im:
            im.load()


# ---------------------------------------------------------------- dataset.verify_images=true


@pytest.mark.parametrize("name", ["tinyimagenet", "imagenet"])
def test_verify_images_refuses_before_submission_naming_every_damaged_file(tmp_path, name, capsys):
    truncated, garbage = make_damaged(name, tmp_path / "data")
    results = tmp_path / "results"
    # Without the key, what a sweep or study calls before it submits checks the layout only.
    prepare(run_cfg(name, tmp_path / "data", results), before_submission=True)
    capsys.readouterr()
    with pytest.raises(ConfigError) as err:
        prepare(run_cfg(name, tmp_path / "data", results, "dataset.verify_images=true"), before_submission=True)
    msg = str(err.value)
    first = msg.splitlines()[0]
    assert first.startswith("dataset.verify_images=true found 2 damaged image files")
    assert "replace" in first and "dataset.on_damaged=skip" in first
    assert str(truncated) in msg and str(garbage) in msg
    assert "truncated" in msg.lower()  # the truncated JPEG's reason
    assert "Traceback" not in msg
    # Progress: what is being verified, and how it ended.
    out = capsys.readouterr().out
    assert "verifying the" in out and "image files" in out and "2 damaged" in out
    assert files_under(results) == []


@pytest.mark.parametrize("name", ["tinyimagenet", "imagenet"])
def test_verify_images_refuses_a_run_before_its_directory_is_written(tmp_path, name):
    truncated, garbage = make_damaged(name, tmp_path / "data")
    results = tmp_path / "results"
    cfg = run_cfg(name, tmp_path / "data", results, "dataset.verify_images=true", "dataset.num_workers=2")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    msg = str(err.value)
    assert msg.startswith("dataset.verify_images=true found 2 damaged image files")
    assert str(truncated) in msg and str(garbage) in msg and "Traceback" not in msg
    assert files_under(results) == []


def test_verify_images_passes_a_healthy_dataset_and_checks_it_once_per_process(tmp_path, capsys):
    write_imagenet(tmp_path / "data")
    cfg = run_cfg("imagenet", tmp_path / "data", tmp_path / "results", "dataset.verify_images=true")
    check_dataset(cfg.dataset, read=True)
    assert "verified the 22 image files" in capsys.readouterr().out
    check_dataset(cfg.dataset, read=True)  # the same files: not decoded again
    assert "verif" not in capsys.readouterr().out
    # A file changed since: verified again, and found damaged.
    _garbage(tmp_path / "data" / "imagenet" / "train" / "dog" / "5.png")
    with pytest.raises(ConfigError, match="found 1 damaged image file in"):
        check_dataset(cfg.dataset, read=True)
    assert "verified the 22 image files" in capsys.readouterr().out
    # The next job of a sweep on the same files is refused as well, without decoding them again.
    with pytest.raises(ConfigError, match="found 1 damaged image file in"):
        check_dataset(cfg.dataset, read=True)
    assert "verif" not in capsys.readouterr().out


def test_a_message_lists_at_most_twenty_damaged_files_and_counts_the_rest():
    damaged = [(f"/data/train/{i}.jpg", "not an image PIL can identify") for i in range(23)]
    msg = damaged_message(damaged, "dataset imagenet", "verify_images")
    lines = msg.splitlines()
    assert lines[0].startswith("dataset.verify_images=true found 23 damaged image files in dataset imagenet")
    assert sum("/data/train/" in line for line in lines) == 20
    assert lines[-1].strip() == "... and 3 more"


# ---------------------------------------------------------------- on_damaged=stop (the default)


def test_a_damaged_image_in_a_dataloader_worker_stops_with_the_file_named_and_no_traceback(tmp_path):
    truncated, garbage = damage_imagenet(write_imagenet(tmp_path / "data"))
    cfg = run_cfg("imagenet", tmp_path / "data", tmp_path / "results", "dataset.num_workers=2")
    data = build_dataset(cfg.dataset).to("cpu")  # opening reads no image: the files are met in batches
    assert data.train_x.num_workers == 2 and str(truncated) in {p for p, _ in data.train_x.samples}
    with pytest.raises(ConfigError) as err:
        for _ in data.train_batches(4, torch.Generator().manual_seed(0)):
            pass
    assert isinstance(err.value, DamagedImage) and err.value.path == str(truncated)
    msg = str(err.value)
    assert msg.startswith(f"image file {truncated} is damaged (")
    assert "Traceback" not in msg and "DataLoader worker" not in msg
    assert "dataset.on_damaged=skip" in msg and "dataset.verify_images=true" in msg
    with pytest.raises(DamagedImage) as err:
        list(data.eval_batches("test", 4))
    assert err.value.path == str(garbage) and "Traceback" not in str(err.value)


def test_a_run_that_meets_a_damaged_image_stops_with_one_clean_message(tmp_path):
    truncated, _ = damage_imagenet(write_imagenet(tmp_path / "data"))
    cfg = run_cfg("imagenet", tmp_path / "data", tmp_path / "results", "dataset.num_workers=2")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    msg = str(err.value)
    assert str(truncated) in msg and "Traceback" not in msg and "Caught" not in msg
    summary = json.loads((tmp_path / "results" / run_name(cfg) / "summary.json").read_text())
    assert summary["status"] == "failed" and str(truncated) in summary["error"]
    assert "Traceback" not in summary["error"]


def test_tinyimagenet_stops_as_it_opens_naming_every_damaged_file(tmp_path):
    truncated, garbage = damage_tiny(write_tiny(tmp_path / "data"))
    results = tmp_path / "results"
    with pytest.raises(ConfigError) as err:
        run(run_cfg("tinyimagenet", tmp_path / "data", results))
    msg = str(err.value)
    assert msg.startswith("dataset.on_damaged=stop: 2 damaged image files in dataset tinyimagenet")
    assert str(truncated) in msg and str(garbage) in msg and "Traceback" not in msg
    assert files_under(results) == []


# ---------------------------------------------------------------- on_damaged=skip


def _rows(x) -> set[bytes]:
    return {bytes(r.numpy().tobytes()) for r in x.raw}


def test_skip_leaves_the_damaged_tinyimagenet_files_out_and_keeps_every_other_split(tmp_path):
    clean_base = write_tiny(tmp_path / "clean")
    damaged_base = tmp_path / "damaged" / "tiny-imagenet-200"
    shutil.copytree(clean_base, damaged_base)
    truncated, garbage = damage_tiny(damaged_base)
    clean = build_dataset(run_cfg("tinyimagenet", tmp_path / "clean", tmp_path / "r").dataset)
    skip = run_cfg("tinyimagenet", tmp_path / "damaged", tmp_path / "r", "dataset.on_damaged=skip").dataset
    data = build_dataset(skip)
    assert sorted(d["path"] for d in data.damaged) == sorted([str(truncated), str(garbage)])
    assert [d["split"] for d in data.damaged if d["path"] == str(garbage)] == ["test"]
    n_lost = {"train": 0, "val": 0, "test": 1}
    n_lost[next(d["split"] for d in data.damaged if d["path"] == str(truncated))] += 1
    # Exactly the damaged files are gone; every other image is in the split it has in the clean tree.
    for split in ("train", "val", "test"):
        clean_x, got_x = getattr(clean, f"{split}_x"), getattr(data, f"{split}_x")
        assert len(got_x) == len(clean_x) - n_lost[split]
        assert _rows(got_x) <= _rows(clean_x)
    # Deterministic: opened again, the same files are left out and the same batches drawn.
    again = build_dataset(skip)
    assert again.damaged == data.damaged
    a = list(data.train_batches(5, torch.Generator().manual_seed(3)))
    b = list(again.train_batches(5, torch.Generator().manual_seed(3)))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_skip_leaves_the_damaged_imagenet_files_out_of_every_split(tmp_path):
    clean_base = write_imagenet(tmp_path / "clean")
    damaged_base = tmp_path / "damaged" / "imagenet"
    shutil.copytree(clean_base, damaged_base)
    truncated, garbage = damage_imagenet(damaged_base)
    clean = build_dataset(run_cfg("imagenet", tmp_path / "clean", tmp_path / "r").dataset)
    cfg = run_cfg("imagenet", tmp_path / "damaged", tmp_path / "r", "dataset.on_damaged=skip", "dataset.num_workers=2")
    data = build_dataset(cfg.dataset).to("cpu")

    def rel(split, base):
        return {str(Path(p).relative_to(base)) for p, _ in getattr(data if base == damaged_base else clean, f"{split}_x").samples}

    bad = {str(truncated.relative_to(damaged_base)), str(garbage.relative_to(damaged_base))}
    for split in ("train", "val", "test"):
        assert rel(split, damaged_base) == rel(split, clean_base) - bad
    assert sorted(d["path"] for d in data.damaged) == sorted([str(truncated), str(garbage)])
    # Every batch reads (in DataLoader workers) without meeting a damaged file.
    seen = sum(len(y) for _, y in data.train_batches(4, torch.Generator().manual_seed(0)))
    assert seen == len(data.train_x) == len(data.train_y)
    assert sum(len(y) for _, y in data.eval_batches("test", 4)) == len(data.test_x) == 5


@pytest.mark.parametrize("name", ["tinyimagenet", "imagenet"])
def test_a_skipping_run_finishes_and_counts_the_damaged_images_in_its_summary(tmp_path, name):
    truncated, garbage = make_damaged(name, tmp_path / "data")
    cfg = run_cfg(name, tmp_path / "data", tmp_path / "results", "dataset.on_damaged=skip", "dataset.num_workers=2")
    summary = run(cfg)
    assert summary["status"] == "finished"
    written = json.loads((tmp_path / "results" / run_name(cfg) / "summary.json").read_text())
    assert written["damaged_images"]["count"] == 2
    assert sorted(f["path"] for f in written["damaged_images"]["files"]) == sorted([str(truncated), str(garbage)])
    assert any("2 damaged image file(s) left out" in w for w in written["warnings"])
    # Relaunched, the finished run is found (the same identity) and skipped.
    assert run(cfg).get("skipped") is True


def test_a_skipping_run_resumed_after_an_interruption_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    from growth.methods import MethodRun

    make_damaged("tinyimagenet", tmp_path / "data")
    extra = ("dataset.on_damaged=skip", "trainer.epochs=3")
    whole = run(run_cfg("tinyimagenet", tmp_path / "data", tmp_path / "whole", *extra))
    cfg = run_cfg("tinyimagenet", tmp_path / "data", tmp_path / "resumed", *extra)
    original, calls = MethodRun.checkpoint, []

    def interrupted_after_the_first_checkpoint(self):
        original(self)
        calls.append(self.engine.step)
        raise RuntimeError("interrupted")

    monkeypatch.setattr(MethodRun, "checkpoint", interrupted_after_the_first_checkpoint)
    with pytest.raises(RuntimeError, match="interrupted"):
        run(cfg)
    monkeypatch.undo()
    assert (tmp_path / "resumed" / run_name(cfg) / "checkpoint.pt").is_file()  # the relaunch resumes from it
    resumed = run(cfg)
    assert calls and calls[0] > 0 and resumed["status"] == "finished"
    assert resumed["damaged_images"] == whole["damaged_images"] and resumed["damaged_images"]["count"] == 2
    assert not any("changed on resume" in w for w in resumed["warnings"])
    assert resumed["total_cost"]["steps"] == whole["total_cost"]["steps"]
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert curve_without_times(tmp_path / "resumed", cfg) == curve_without_times(tmp_path / "whole", cfg)


def curve_without_times(results: Path, cfg) -> list[dict]:
    import csv

    with open(results / run_name(cfg) / "curve.csv") as f:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]


# ---------------------------------------------------------------- the keys


def test_the_keys_are_checked_and_their_defaults_keep_run_names(tmp_path):
    base = ["dataset=tinyimagenet", f"dataset.root={tmp_path}"]
    write_tiny(tmp_path)
    with pytest.raises(ConfigError, match=r"dataset.on_damaged='ignore' is invalid: one of \['stop', 'skip'\]"):
        prepare(compose_cfg([*FAST, *base, "dataset.on_damaged=ignore"], tmp_path=tmp_path / "r"))
    with pytest.raises(ConfigError, match="dataset.verify_images=true is invalid with dataset.on_damaged=skip"):
        prepare(compose_cfg([*FAST, *base, "dataset.on_damaged=skip", "dataset.verify_images=true"], tmp_path=tmp_path / "r"))
    name = run_name(compose_cfg([*FAST, *base], tmp_path=tmp_path / "r"))
    explicit = compose_cfg([*FAST, *base, "dataset.on_damaged=stop", "dataset.verify_images=false"], tmp_path=tmp_path / "r")
    assert run_name(explicit) == name
    # verify_images changes nothing a run computes: the same run; skip reads other data: another run.
    assert run_name(compose_cfg([*FAST, *base, "dataset.verify_images=true"], tmp_path=tmp_path / "r")) == name
    assert run_name(compose_cfg([*FAST, *base, "dataset.on_damaged=skip"], tmp_path=tmp_path / "r")) != name
