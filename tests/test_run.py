"""Whole runs on the embedded default: records, skip, resume after a kill, divergence."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from growth.data import load_digits
from growth.records import load_checkpoint, run_dir_for
from growth.run import run
from tests.conftest import FAST, REPO

ROUND_COLUMNS = {"round", "density", "proxy_accuracy", "batches", "cost_epochs", "cost_flops", "wall_seconds", "stop", "fit_a", "fit_b", "fit_k", "fit_x0"}
SUMMARY_KEYS = {"method", "dataset", "model", "seed", "seed_density", "discovered_density", "test_accuracy", "cost", "status"}
TIMING_COLUMNS = ("wall_seconds",)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def comparable_records(run_dir: Path):
    """Everything a run produced, minus wall-clock time."""
    rounds = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in read_csv(run_dir / "rounds.csv")]
    curve = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in read_csv(run_dir / "curve.csv")]
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("cost", "growth_cost", "total_cost"):
        summary[key].pop("seconds", None)
    summary.pop("run_dir", None)
    ckpt = load_checkpoint(run_dir)
    masks = {n: m.tolist() for n, m in ckpt["masks"].items()}
    weights = {n: t.tolist() for n, t in ckpt["model"].items()}
    return rounds, curve, summary, masks, weights


def test_a_run_writes_every_record(make_cfg):
    cfg = make_cfg("growth.max_rounds=4")
    summary = run(cfg)
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "finished"
    assert SUMMARY_KEYS <= set(json.loads((run_dir / "summary.json").read_text()))
    rounds = read_csv(run_dir / "rounds.csv")
    assert ROUND_COLUMNS <= set(rounds[0])
    assert [int(r["round"]) for r in rounds] == [0, 1, 2, 3]
    densities = [float(r["density"]) for r in rounds]
    assert densities == sorted(densities) and densities[0] == pytest.approx(0.01, abs=0.002)
    # geometric growth: each round multiplies the edge count by the growth ratio
    edges = [int(r["edges"]) for r in rounds]
    assert all(b == a + round(0.25 * a) for a, b in zip(edges, edges[1:]))
    costs = [float(r["cost_epochs"]) for r in rounds]
    assert costs == pytest.approx([(i + 1) / 6 for i in range(4)])  # one 1-epoch round = 1/6 dense run
    curve = read_csv(run_dir / "curve.csv")
    assert len(curve) == 1 and float(curve[0]["density"]) == densities[-1]
    assert float(curve[0]["cost_epochs"]) == pytest.approx(costs[-1] + 1.0)
    assert summary["discovered_density"] == densities[-1]
    assert "max_rounds" in summary["stop_reason"]
    assert (run_dir / "config.yaml").exists() and (run_dir / "snapshots" / "round_003.pt").exists()
    assert 0.15 < summary["test_accuracy"] <= 1.0  # above chance (0.1) after a few epochs


def test_extensive_training_of_every_snapshot(make_cfg):
    summary = run(make_cfg("growth.max_rounds=3", "extensive.which=all"))
    curve = read_csv(Path(summary["run_dir"]) / "curve.csv")
    assert [int(c["round"]) for c in curve] == [0, 1, 2]
    growth_costs = [float(r["cost_epochs"]) for r in read_csv(Path(summary["run_dir"]) / "rounds.csv")]
    assert [float(c["cost_epochs"]) for c in curve] == pytest.approx([g + 1.0 for g in growth_costs])


def test_finished_run_is_skipped(make_cfg):
    cfg = make_cfg("growth.max_rounds=2")
    first = run(cfg)
    stamp = (Path(first["run_dir"]) / "summary.json").stat().st_mtime_ns
    again = run(cfg)
    assert again.get("skipped") is True
    assert (Path(first["run_dir"]) / "summary.json").stat().st_mtime_ns == stamp


def test_diverging_run_ends_with_status_diverged_and_where(make_cfg):
    cfg = make_cfg("trainer.round_lr=1e30", "trainer.momentum=0")
    summary = run(cfg)
    assert summary["status"] == "diverged"
    on_disk = json.loads((run_dir_for(cfg) / "summary.json").read_text())
    assert on_disk["status"] == "diverged"
    assert on_disk["where"]["phase"] == "growth" and "step" in on_disk["where"] and "round" in on_disk["where"]


def test_adaptive_timing_records_batches_below_the_cap(make_cfg):
    cfg = make_cfg(
        "growth.timing.mode=adaptive", "growth.timing.eval_every=5", "growth.timing.patience=2",
        "growth.timing.max_epochs=4", "growth.max_rounds=3",
    )
    summary = run(cfg)
    rounds = read_csv(Path(summary["run_dir"]) / "rounds.csv")
    batches = [int(r["batches"]) for r in rounds]
    per_epoch = -(-len(load_digits(cfg.dataset).train_x) // 64)
    assert all(0 < b <= 4 * per_epoch for b in batches)
    assert any(b < 4 * per_epoch for b in batches), "early stopping should end some round before the cap"


def _launch(root: Path, *overrides):
    return subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), f"output.root={root}", *overrides],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.slow
def test_killed_run_resumes_to_identical_records(tmp_path):
    overrides = [*FAST, "growth.max_rounds=6", "growth.timing.epochs=2", "trainer.epochs=8"]
    reference = _launch(tmp_path / "ref", *overrides)
    assert reference.wait(timeout=300) == 0, reference.stdout.read()

    victim = _launch(tmp_path / "kill", *overrides)
    deadline = time.time() + 120
    run_dir = None
    while time.time() < deadline:
        found = list((tmp_path / "kill").glob("pwmpr-*/rounds.csv"))
        if found and len(read_csv(found[0])) >= 2:
            run_dir = found[0].parent
            break
        time.sleep(0.005)
    assert run_dir is not None, "the run never reached round 2"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    state = json.loads((run_dir / "summary.json").read_text())["status"]
    assert state == "running", "the kill must land before the run finished"
    killed_at = load_checkpoint(run_dir)["state"]["round"]

    resumed = _launch(tmp_path / "kill", *overrides, "output.progress=true")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "resuming" in out
    ref_dir = next((tmp_path / "ref").glob("pwmpr-*"))
    assert ref_dir.name == run_dir.name  # output.progress is not part of the run's identity
    assert comparable_records(run_dir) == comparable_records(ref_dir), f"killed at round {killed_at}"


@pytest.mark.slow
def test_default_launch_finishes_with_a_discovered_density(tmp_path):
    started = time.time()
    proc = _launch(tmp_path)
    out = proc.communicate(timeout=600)[0]
    elapsed = time.time() - started
    assert proc.returncode == 0, out
    assert "discovered density" in out and "test accuracy" in out
    summary = json.loads(next(tmp_path.glob("pwmpr-digits-mlp-s0-*/summary.json")).read_text())
    assert summary["status"] == "finished"
    assert summary["stop_reason"].startswith("noise_tol fit")  # the default rule (conf/config.yaml)
    assert summary["seed_density"] < summary["discovered_density"] < 1.0
    assert summary["test_accuracy"] > 0.85
    print(f"python launch.py took {elapsed:.1f} s")
