"""Exporting a run's network (growth/export.py, docs/export.md): the files, which weights they
hold, that they reproduce the run's recorded accuracies, the sparse model, and the one-line errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file

from growth.data import build_dataset
from growth.errors import ConfigError
from growth.export import (
    MASKS, PROVENANCE, WEIGHTS, SparseConv2d, SparseLinear, export_run, load_export, predict, sha256, to_sparse_model,
    typed_config,
)
from growth.masks import growable_parameters
from growth.records import load_checkpoint, read_json, run_dir_for
from growth.run import run
from tests.conftest import FAST, REPO, compose_cfg

GROW = [*FAST, "trainer.epochs=3", "growth.max_rounds=3"]


def finished_run(root, *overrides):
    cfg = compose_cfg([*GROW, *overrides], tmp_path=root)
    assert run(cfg)["status"] == "finished"
    return run_dir_for(cfg)


@pytest.fixture(scope="module")
def growth_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("grow"))


@pytest.fixture(scope="module")
def every_round_trained(tmp_path_factory):
    """extensive.which=all: every snapshot trained, so the checkpoint ends on the last one."""
    return finished_run(tmp_path_factory.mktemp("all"), "extensive.which=all", "growth.max_rounds=3")


@pytest.fixture(scope="module")
def rigl_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("rigl"), "method=rigl", "method.density=0.05", "trainer.epochs=1")


def run_data(run_dir):
    """The run's config (as its config.yaml types it) and its dataset."""
    cfg = typed_config(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True))
    return cfg, build_dataset(cfg.dataset)


def accuracy(model, data, cfg, split="test"):
    """As Engine.evaluate counts it: correct / n over the split in eval batches."""
    logits = predict(model, data.eval_batches(split, cfg.trainer.eval_batch_size))
    return int((logits.argmax(1) == getattr(data, f"{split}_y")).sum()) / len(logits)


def rounds(run_dir):
    with open(run_dir / "rounds.csv", newline="") as f:
        return list(csv.DictReader(f))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "growth.export", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ------------------------------------------------------------------ the files


def test_the_files_load_with_safetensors_and_weights_outside_masks_are_exactly_zero(growth_run):
    out = export_run(growth_run)
    assert out == growth_run / "export"
    provenance = json.loads((out / PROVENANCE).read_text())
    for name in (WEIGHTS, MASKS):
        assert provenance["files"][name]["sha256"] == sha256(out / name)
        with safe_open(out / name, framework="pt") as f:
            assert len(f.keys()) > 0
    weights, masks = load_file(out / WEIGHTS), load_file(out / MASKS)
    assert set(masks) == {"layers.0.weight", "layers.1.weight", "layers.2.weight"}
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and 0 < int(mask.sum()) < mask.numel()
        assert torch.all(weights[name][~mask] == 0) and not torch.any(torch.signbit(weights[name][~mask]))
        assert torch.count_nonzero(weights[name][mask]) > 0
    assert set(weights) == set(load_checkpoint(growth_run)["model"])  # the full state dict, biases included


def test_the_default_export_is_the_discovered_rounds_trained_network_and_reproduces_its_accuracy(growth_run):
    out = export_run(growth_run)
    summary = read_json(growth_run / "summary.json")
    provenance = json.loads((out / PROVENANCE).read_text())
    assert provenance["weights"] == "trained" and provenance["round"] == summary["discovered_round"]
    assert provenance["point"] == f"extensive:{summary['discovered_round']}" and provenance["notes"] == []
    assert provenance["test_accuracy"] == summary["test_accuracy"] and provenance["val_accuracy"] == summary["val_accuracy"]
    model, masks = load_export(out)
    cfg, data = run_data(growth_run)
    # recomputed on the dataset: exactly the accuracies the run recorded for these weights
    assert accuracy(model, data, cfg) == summary["test_accuracy"]
    assert accuracy(model, data, cfg, "val") == summary["val_accuracy"]
    # the run's own network: its checkpoint's weights in a model of the run's config
    saved = load_checkpoint(growth_run)
    own, _ = load_export(out)
    own.load_state_dict(saved["model"])
    assert all(torch.equal(saved["masks"][n], masks[n]) for n in masks)
    batches = list(data.eval_batches("test", 128))
    assert torch.equal(predict(own, batches), predict(model, batches))


def test_provenance_densities_match_the_masks(growth_run):
    out = export_run(growth_run)
    provenance = json.loads((out / PROVENANCE).read_text())
    masks = load_file(out / MASKS)
    assert provenance["layer_density"] == {n: float(m.sum()) / m.numel() for n, m in masks.items()}
    assert provenance["layer_edges"] == {n: [int(m.sum()), m.numel()] for n, m in masks.items()}
    assert provenance["edges"] == sum(int(m.sum()) for m in masks.values())
    assert provenance["density"] == pytest.approx(read_json(growth_run / "summary.json")["discovered_density"], abs=1e-15)
    row = rounds(growth_run)[provenance["round"]]
    assert all(provenance["layer_density"][n] == pytest.approx(float(row[f"layer_density:{n}"])) for n in masks)
    assert provenance["config"]["method"]["name"] == "pwmpr" and provenance["run_dir"] == str(growth_run)


# ------------------------------------------------------------------ the sparse model


def test_the_sparse_model_predicts_what_the_masked_dense_model_predicts(growth_run):
    model, masks = load_export(export_run(growth_run))
    sparse = to_sparse_model(model, masks)
    assert sparse.dense_masked == []
    for name, mask in masks.items():
        layer = sparse.get_submodule(name.rpartition(".")[0])
        assert isinstance(layer, SparseLinear) and layer.weight.layout == torch.sparse_csr
        assert layer.weight._nnz() == int(mask.sum())
    _, data = run_data(growth_run)
    for batch in (1, 97, 1024):
        dense_logits = predict(model, data.eval_batches("test", batch))
        sparse_logits = predict(sparse, data.eval_batches("test", batch))
        assert torch.equal(dense_logits.argmax(1), sparse_logits.argmax(1))
        torch.testing.assert_close(sparse_logits, dense_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,shape", [("convnet", (1, 28, 28)), ("resnet20", (3, 32, 32))])
def test_sparse_convolutions_compute_the_masked_convolution(name, shape):
    """Strided, padded and 1x1 convolutions, with BatchNorm (eval) between them."""
    cfg = compose_cfg([f"model={name}", "dataset=mnist" if name == "convnet" else "dataset=cifar10"])
    from growth.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model, shape, 10).eval()
    g = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(p.shape, generator=g) < 0.2 for n, p in growable_parameters(model).items()}
    with torch.no_grad():
        for n, p in growable_parameters(model).items():
            p.mul_(masks[n])
    sparse = to_sparse_model(model, masks)
    convs = [m for m in sparse.modules() if isinstance(m, SparseConv2d)]
    assert convs and sparse.dense_masked == [] and not any(isinstance(m, torch.nn.Conv2d) for m in sparse.modules())
    x = torch.randn(4, *shape, generator=g)
    dense_logits, sparse_logits = predict(model, [(x, None)]), predict(sparse, [(x, None)])
    assert torch.equal(dense_logits.argmax(1), sparse_logits.argmax(1))
    torch.testing.assert_close(sparse_logits, dense_logits, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ which weights


def test_a_round_exports_its_snapshot_as_grown(growth_run):
    done = cli(growth_run, "--round", 1)
    assert done.returncode == 0, done.stderr
    out = growth_run / "export_round_001"
    assert done.stdout.splitlines() == [f"wrote {out / n}" for n in (WEIGHTS, MASKS, PROVENANCE)]
    assert "not kept" in done.stderr  # the note: round 1 was never extensively trained
    provenance = json.loads((out / PROVENANCE).read_text())
    row = rounds(growth_run)[1]
    assert provenance["weights"] == "as grown" and provenance["round"] == 1 and provenance["point"] is None
    assert provenance["density"] == float(row["density"]) and provenance["test_accuracy"] is None
    snap = torch.load(growth_run / "snapshots" / "round_001.pt", weights_only=True)
    weights = load_file(out / WEIGHTS)
    assert all(torch.equal(weights[n], snap["model"][n] * snap["masks"].get(n, True)) for n in weights)
    model, _ = load_export(out)
    cfg, data = run_data(growth_run)
    assert accuracy(model, data, cfg, "val") == float(row["proxy_accuracy"]) == provenance["val_accuracy"]


def test_with_every_round_trained_earlier_rounds_are_exported_as_grown_with_a_note(every_round_trained):
    summary = read_json(every_round_trained / "summary.json")
    assert summary["discovered_round"] == 2
    with open(every_round_trained / "curve.csv", newline="") as f:
        curve = {int(c["round"]): float(c["test_accuracy"]) for c in csv.DictReader(f)}
    # the last round trained is the discovered one here: the default is its trained network
    provenance = json.loads((export_run(every_round_trained) / PROVENANCE).read_text())
    assert provenance["weights"] == "trained" and provenance["point"] == "extensive:2"
    # round 0's trained weights were overwritten by later trainings: its snapshot, with a note
    earlier = json.loads((export_run(every_round_trained, round=0) / PROVENANCE).read_text())
    assert earlier["weights"] == "as grown" and "extensive:2" in earlier["notes"][0]
    model, _ = load_export(every_round_trained / "export")
    cfg, data = run_data(every_round_trained)
    assert accuracy(model, data, cfg) == curve[2]
    grown = json.loads((export_run(every_round_trained, round=2, as_grown=True) / PROVENANCE).read_text())
    assert grown["weights"] == "as grown" and grown["files"][WEIGHTS]["sha256"] != provenance["files"][WEIGHTS]["sha256"]


def test_a_fixed_density_run_exports_its_trained_network(rigl_run):
    out = export_run(rigl_run)
    summary = read_json(rigl_run / "summary.json")
    provenance = json.loads((out / PROVENANCE).read_text())
    assert provenance["method"] == "rigl" and provenance["point"] == "train" and provenance["round"] is None
    assert provenance["density"] == pytest.approx(summary["density"], abs=1e-15)
    assert provenance["density"] == pytest.approx(0.05, abs=0.005)
    model, masks = load_export(out)
    cfg, data = run_data(rigl_run)
    assert accuracy(model, data, cfg) == summary["test_accuracy"]
    sparse = to_sparse_model(model, masks)
    batches = list(data.eval_batches("test", 256))
    torch.testing.assert_close(predict(sparse, batches), predict(model, batches), atol=1e-5, rtol=0)
    assert torch.equal(predict(sparse, batches).argmax(1), predict(model, batches).argmax(1))


def test_the_sparse_check_on_the_command_line(rigl_run, tmp_path):
    done = cli(rigl_run, "--out", tmp_path / "x", "--sparse-check")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [f"wrote {tmp_path / 'x' / n}" for n in (WEIGHTS, MASKS, PROVENANCE)]
    assert lines[3].startswith("sparse check: ") and "predictions identical" in lines[3] and "3/3 masked layers sparse" in lines[3]


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def unfinished_run(growth_run, tmp_path_factory):
    """A copy of a finished run whose summary says it is still running (as a killed run's does)."""
    copy = tmp_path_factory.mktemp("unfinished") / growth_run.name
    shutil.copytree(growth_run, copy)
    summary = read_json(copy / "summary.json")
    (copy / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    return copy


@pytest.mark.parametrize("case", ["missing", "not_a_run", "unfinished", "round_out_of_range", "round_of_fixed_run",
                                  "as_grown_of_fixed_run", "round_not_a_number", "negative_round"])
def test_bad_input_is_one_line_naming_the_argument_and_exit_code_2(case, growth_run, rigl_run, unfinished_run, tmp_path):
    args, expect = {
        "missing": ([tmp_path / "nowhere"], ["RUN_DIR", "no such directory", "give a run directory"]),
        "not_a_run": ([tmp_path], ["RUN_DIR", "not a run directory", "summary.json and config.yaml"]),
        "unfinished": ([unfinished_run], ["RUN_DIR", "'running'", "only a finished run"]),
        "round_out_of_range": ([growth_run, "--round", 7], ["--round 7", "no snapshot of round 7", "valid rounds: 0-2"]),
        "round_of_fixed_run": ([rigl_run, "--round", 0], ["--round", "rigl run", "no growth rounds", "omit --round"]),
        "as_grown_of_fixed_run": ([rigl_run, "--as-grown"], ["--as-grown", "no growth rounds"]),
        "round_not_a_number": ([growth_run, "--round", "last"], ["--round", "invalid int value"]),
        "negative_round": ([growth_run, "--round", "-1"], ["--round -1", "non-negative"]),
    }[case]
    done = cli(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in expect:
        assert fragment in lines[0], (fragment, lines[0])


def test_the_library_raises_config_error_for_the_same_inputs(growth_run, tmp_path):
    with pytest.raises(ConfigError, match="valid rounds: 0-2"):
        export_run(growth_run, round=5, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written for a refused export
    tampered = tmp_path / "tampered"
    shutil.copytree(export_run(growth_run), tampered)
    (tampered / MASKS).write_bytes((tampered / MASKS).read_bytes()[:-1] + b" ")
    with pytest.raises(ConfigError, match="does not match its SHA-256"):
        load_export(tampered)


def test_the_inference_benchmark_runs_and_reports_every_row(growth_run):
    done = subprocess.run([sys.executable, "bench/sparse_inference.py", "--quick", "--run", str(growth_run), "--batches", "1,8",
                           "--repeats", "1"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    # the run's own network, then lenet300 at 1%, 5% and the run's density; batches 1 and 8 each
    assert [(r[0].strip().split()[0], r[2].strip()) for r in rows] == [
        (name, b) for name in ("pwmpr", "lenet300", "lenet300", "lenet300") for b in ("1", "8")]
    assert all(float(r[5]) > 0 for r in rows)
