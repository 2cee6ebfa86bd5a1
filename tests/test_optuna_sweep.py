"""Hyperparameter search with Optuna (hydra/sweeper=growth_optuna, docs/sweeps.md): real sweeps of
a few tiny trials on digits through the launcher, the objective it returns, and what is refused."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from growth.records import run_name
from growth_cli.launch import sweep_objective
from tests.conftest import REPO, compose_cfg

if not os.environ.get("CI"):  # in CI a missing sweeper fails the tests, never skips them
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the sweep extra: pip install -e '.[sweep]'")

# Tiny trials; the default stop rule (noise_tol) stays, so growth.stop.tol changes what a trial does.
TINY = [
    "trainer.epochs=3", "growth.timing.epochs=1", "growth.max_rounds=5", "growth.proxy.anneal_epochs=0",
    "model.hidden=[32,32]", "output.progress=false",
]
SEARCHED = ("growth.temperature", "growth.growth_ratio", "growth.stop.tol")


def launch_sweep(tmp_path: Path, sweeper: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "-m", f"hydra/sweeper={sweeper}", f"output.root={tmp_path / 'runs'}",
         f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY, *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def trials(tmp_path: Path) -> list[dict]:
    """Every trial's run, read from its records: searched values, objective inputs, directory."""
    found = []
    for summary_path in sorted((tmp_path / "runs").glob("pwmpr-*/summary.json")):
        summary = json.loads(summary_path.read_text())
        config = yaml.safe_load((summary_path.parent / "config.yaml").read_text())
        params = {key: functools.reduce(lambda node, part: node[part], key.split("."), config) for key in SEARCHED}
        found.append({"summary": summary, "config": config, "params": params, "dir": summary_path.parent})
    return found


def results(tmp_path: Path) -> dict:
    return yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())


def test_a_seeded_sweep_of_three_trials_reports_the_best_trials_validation_accuracy(tmp_path):
    done = launch_sweep(tmp_path, "growth_optuna", "hydra.sweeper.n_trials=3")
    assert done.returncode == 0, done.stdout + done.stderr
    runs = trials(tmp_path)
    assert len(runs) == 3
    assert all(r["summary"]["status"] == "finished" for r in runs)
    assert len({r["params"]["growth.temperature"] for r in runs}) == 3  # three distinct proposals
    for r in runs:
        assert 0.5 <= r["params"]["growth.temperature"] <= 2.0 and 1.1 <= r["params"]["growth.growth_ratio"] <= 1.5
        assert r["config"]["sweep"]["objective"] == "val_at_discovered"
        # sweep.* is no part of the identity: the trial is the run its searched values name
        plain = [*TINY, *(f"{k}={v}" for k, v in r["params"].items())]
        assert r["dir"].name == run_name(compose_cfg(plain, tmp_path / "runs"))
    best = results(tmp_path)
    chosen = max(runs, key=lambda r: r["summary"]["val_accuracy"])
    assert best["best_value"] == pytest.approx(chosen["summary"]["val_accuracy"], rel=1e-12)
    assert best["best_params"] == pytest.approx(chosen["params"], rel=1e-12)
    # the sweep's report lists the trials the sweeper chose, each with its run directory
    assert "sweep report: 3 finished" in done.stdout
    assert all(str(r["dir"]) in done.stdout for r in runs)


def test_two_objectives_write_the_pareto_front_of_accuracy_and_cost(tmp_path):
    done = launch_sweep(tmp_path, "growth_optuna_cost", "hydra.sweeper.n_trials=3")
    assert done.returncode == 0, done.stdout + done.stderr
    runs = trials(tmp_path)
    assert len(runs) == 3
    points = [(r["summary"]["val_accuracy"], r["summary"]["cost"]["epochs"]) for r in runs]

    def dominated(p):
        return any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)

    front = results(tmp_path)["solutions"]
    assert front, "a Pareto front of at least one trial"
    for solution in front:
        match = next(r for r in runs if r["params"] == pytest.approx(solution["params"], rel=1e-12))
        assert solution["values"] == pytest.approx([match["summary"]["val_accuracy"], match["summary"]["cost"]["epochs"]])
    assert len(front) == sum(not dominated(p) for p in points)


def test_a_refused_trial_fails_alone_and_the_study_goes_on(tmp_path):
    # A search space reaching growth ratios the schema refuses (not above 1): those trials fail,
    # the others run, and the best is one of them.
    search = tmp_path / "search" / "hydra" / "sweeper"
    search.mkdir(parents=True)
    (search / "with_refused.yaml").write_text(
        "defaults:\n  - growth_optuna\nparams:\n  growth.growth_ratio: choice(0.9, 1.3)\n")
    done = launch_sweep(tmp_path, "with_refused", f"hydra.searchpath=[file://{tmp_path / 'search'}]",
                        "hydra.sweeper.n_trials=4")
    assert done.returncode == 0, done.stdout + done.stderr
    log = done.stdout + done.stderr
    assert "trial refused" in log and "growth.growth_ratio" in log
    runs = trials(tmp_path)
    assert runs and all(r["params"]["growth.growth_ratio"] == 1.3 for r in runs)
    assert len(runs) < 4  # some trials were refused and trained nothing
    best = results(tmp_path)
    assert best["best_params"]["growth.growth_ratio"] == 1.3
    assert best["best_value"] == pytest.approx(max(r["summary"]["val_accuracy"] for r in runs), rel=1e-12)


@pytest.mark.parametrize("where", ["command line", "search space"])
def test_a_misspelt_key_is_refused_before_any_trial_runs(tmp_path, where):
    extra = ["growth.temperatur=0.5,1.0"]
    if where == "search space":
        search = tmp_path / "search" / "hydra" / "sweeper"
        search.mkdir(parents=True)
        (search / "misspelt.yaml").write_text(
            "defaults:\n  - growth_optuna\nparams:\n  growth.temperatur: interval(0.5, 2.0)\n")
        extra = [f"hydra.searchpath=[file://{tmp_path / 'search'}]"]
    done = launch_sweep(tmp_path, "growth_optuna" if where == "command line" else "misspelt", *extra)
    assert done.returncode == 2
    assert "growth.temperatur" in done.stderr and "Traceback" not in done.stderr + done.stdout
    if where == "command line":
        assert "error: growth.temperatur is not a key of growth: did you mean growth.temperature?" in done.stderr
    else:  # one line naming the search space's key, from the sweep callback
        (line,) = [x for x in done.stderr.splitlines() if "growth.temperatur" in x]
        assert line.startswith("error: the sweep was not launched: hydra.sweeper.params: growth.temperatur: interval(0.5, 2.0)")
    assert not list((tmp_path / "runs").glob("pwmpr-*"))  # no trial trained anything


def test_the_objective_read_from_a_summary(tmp_path):
    finished = {"status": "finished", "val_accuracy": 0.8, "cost": {"epochs": 1.5}, "run_dir": "r"}
    assert sweep_objective(compose_cfg([], tmp_path), finished) is finished  # no objective: the summary
    assert sweep_objective(compose_cfg(["sweep.objective=val_at_discovered"], tmp_path), finished) == 0.8
    assert sweep_objective(compose_cfg(["sweep.objective=val_and_cost"], tmp_path), finished) == [0.8, 1.5]
    penalised = compose_cfg(["sweep.objective=val_minus_cost", "sweep.cost_penalty=0.1"], tmp_path)
    assert sweep_objective(penalised, finished) == pytest.approx(0.65)
    # No number for a run without one: the sweeper records a failed trial, never a NaN "best".
    for summary in ({"status": "diverged", "error": "loss is nan"}, {"status": "failed", "error": "OSError: x"},
                    {**finished, "val_accuracy": None}, {**finished, "val_accuracy": math.nan}):
        value = sweep_objective(penalised, summary)
        assert isinstance(value, str) and value.startswith("no objective")
        with pytest.raises(ValueError):
            float(value)


def test_the_objective_is_checked_and_no_part_of_a_runs_identity(tmp_path):
    from growth.config.validation import validate
    from growth.errors import ConfigError

    with pytest.raises(ConfigError, match="sweep.objective"):
        validate(compose_cfg(["sweep.objective=test_accuracy"], tmp_path))
    with pytest.raises(ConfigError, match="sweep.cost_penalty"):
        validate(compose_cfg(["sweep.cost_penalty=-1"], tmp_path))
    assert run_name(compose_cfg(["sweep.objective=val_and_cost", "sweep.cost_penalty=0.5"], tmp_path)) == \
        run_name(compose_cfg([], tmp_path))
