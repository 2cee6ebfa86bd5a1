"""The oracle density and the discovery error (analysis.discovery), their figure and report
section, and replaying stop rules on recorded runs (python -m analysis.replay)."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis import write_report
from analysis.discovery import aggregate_discovery, discovery_table, full_curve, isotonic, run_discovery
from analysis.figures_discovery import figure_name, plot_discovery
from analysis.replay import AFTER_DECISION, LAYER_PREFIX, NEVER_FIRED, ROUND_COLUMNS, main, read_rounds, replay_rule, replay_run, stop_settings
from growth import records
from growth.kinds import STOP_RULES
from growth.run import run
from tests.conftest import FAST, REPO, compose_cfg

# The embedded default at small settings where the logistic rule fires (round 13 of 16, tol 0.01).
GROW = [*FAST, "model.hidden=[100,100]", "growth.stop.rule=logistic", "growth.timing.epochs=2", "growth.max_rounds=16",
        "trainer.epochs=4", "trainer.cpu_threads=1"]


def _run(root, *extra):
    summary = run(compose_cfg([*GROW, *extra], root))
    assert summary["status"] == "finished"
    return records.run_dir_for(compose_cfg([*GROW, *extra], root)), summary


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A real growth run with its full curve: the rule fires, growth goes on, every snapshot trained."""
    return _run(tmp_path_factory.mktemp("full"), "growth.stop.keep_growing=true", "extensive.which=all")


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The same run stopping where the rule fires (rounds.csv records the stop reason)."""
    return _run(tmp_path_factory.mktemp("stopped"))


# ------------------------------------------------------------------ (a) replay reproduces the run


def test_the_runs_records_are_what_the_replay_expects(full):
    run_dir, _ = full
    rows = read_rounds(run_dir)
    fit = set(STOP_RULES.get("logistic")(stop_settings({}, "logistic", {}))([{"density": 0.1, "proxy_accuracy": 0.5}]).as_record())
    layers = {k for k in rows[0] if k.startswith(LAYER_PREFIX)}
    # growth_round's columns before the decision, the rule's, and what it adds after: nothing else
    assert set(rows[0]) == set(ROUND_COLUMNS) | layers | fit | set(AFTER_DECISION) and layers
    first = rows[0]
    assert type(first["round"]) is int and type(first["edges"]) is int and type(first["batches"]) is int
    assert type(first["density"]) is float and type(first["stop"]) is bool and first["stop_reason"] == ""
    assert first["fit_a"] is None and first["fit_reason"].startswith("too few points")


@pytest.mark.parametrize("which", ["full", "stopped"])
def test_replaying_the_runs_own_rule_reproduces_its_decision(which, request):
    run_dir, summary = request.getfixturevalue(which)
    assert summary["stop_reason"].startswith("logistic fit: ")  # the rule fired in the run
    (row,) = replay_run(run_dir)
    assert row["rule"] == "logistic" and row["fired"]
    assert row["discovered_round"] == summary["discovered_round"] == row["recorded_round"]
    assert row["discovered_density"] == summary["discovered_density"]
    assert f"logistic fit: {row['reason']}" == summary["stop_reason"]
    rows = read_rounds(run_dir)
    if which == "stopped":
        assert rows[-1]["round"] == summary["discovered_round"] and rows[-1]["stop_reason"] == summary["stop_reason"]
    # every decision on the way is the one the run recorded, to the last bit
    settings = stop_settings(yaml.safe_load((run_dir / "config.yaml").read_text())["growth"]["stop"], "logistic", {})
    i, decision, decisions = replay_rule(rows, STOP_RULES.get("logistic")(settings))
    assert i == summary["discovered_round"] and len(decisions) == i + 1
    for recorded, made in zip(rows, decisions):
        assert made.as_record() == {k: recorded[k] for k in made.as_record()}
    assert row["cost_dense_runs"] == pytest.approx(rows[i]["cost_epochs"] + 1.0)


def test_another_tolerance_moves_the_decision_the_expected_way(full):
    run_dir, summary = full
    looser = replay_run(run_dir, overrides={"tol": "0.02"})[0]
    stricter = replay_run(run_dir, overrides={"tol": "0.005"})[0]
    assert looser["fired"] and looser["discovered_round"] < summary["discovered_round"]
    assert looser["tol"] == 0.02 and "tol 0.02" in looser["reason"]
    assert stricter["discovered_round"] > summary["discovered_round"]
    never = replay_run(run_dir, ["none"])[0]
    assert not never["fired"] and never["reason"] == NEVER_FIRED
    assert never["discovered_round"] == read_rounds(run_dir)[-1]["round"]


def test_the_command_prints_and_writes_the_table(full, capsys, tmp_path):
    run_dir, summary = full
    out = tmp_path / "replay.csv"
    assert main([str(run_dir.parent), "--rule", "logistic", "--rule", "none", "--set", "confirm=2", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert run_dir.name in printed and "confirm=2" in printed and NEVER_FIRED in printed
    table = pd.read_csv(out)
    assert list(table["rule"]) == ["logistic", "none"] and set(table["confirm"]) == {2}
    own = run_discovery(run_dir)
    assert (table["oracle_density"] == own["oracle_density"]).all()  # one oracle for every rule
    steps = np.log(table["discovered_density"] / own["oracle_density"]) / math.log(1.25)
    assert list(table["error_steps"]) == pytest.approx(list(steps))


# ------------------------------------------------------------------ (b) the oracle of a synthetic curve

DENS = [0.01 * 1.25**i for i in range(11)]  # 1% .. 9.3%, one growth step apart
# Rising, then flat at 0.96 with one noisy dip (0.94 at index 8).
VAL = [0.40, 0.55, 0.70, 0.82, 0.90, 0.96, 0.96, 0.96, 0.94, 0.96, 0.96]
TEST = [0.38, 0.52, 0.69, 0.80, 0.88, 0.94, 0.95, 0.95, 0.95, 0.95, 0.95]


def fake_run(root, seed, discovered, val=VAL, test=TEST, tol=0.01, method="grower", points=None):
    """A growth run's records written by hand: config.yaml, rounds.csv, curve.csv, summary.json."""
    run_dir = root / f"{method}-toy-s{seed}"
    run_dir.mkdir(parents=True)
    config = {"method": {"name": method}, "dataset": {"name": "toy"}, "model": {"name": "toynet"}, "seed": seed,
              "growth": {"growth_ratio": 1.25, "stop": {"rule": "logistic", "tol": tol, "confirm": 3, "min_points": 4,
                                                        "keep_growing": True}}}
    records.atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config))
    n = len(DENS) if points is None else points
    rounds = [{"round": r, "density": d, "proxy_accuracy": v - 0.02, "cost_epochs": 0.1 * (r + 1), "fit_a": 0.3, "fit_b": 0.95,
               "fit_k": 6.0, "fit_x0": -1.6, "stop": r == n - 1, "stop_reason": ""} for r, (d, v) in enumerate(zip(DENS[:n], val))]
    records.atomic_write_csv(run_dir / "rounds.csv", rounds)
    curve = [{"point": f"extensive:{r}", "round": r, "density": d, "val_accuracy": v, "test_accuracy": t, "cost_epochs": 1.0,
              "family": "growth", "phase": "extensive", "label": "Grower"} for r, (d, v, t) in enumerate(zip(DENS[:n], val, test))]
    records.atomic_write_csv(run_dir / "curve.csv", curve)
    records.atomic_write_json(run_dir / "summary.json", {
        "method": method, "dataset": "toy", "model": "toynet", "seed": seed, "status": "finished", "family": "growth",
        "label": "Grower", "discovered_density": None if discovered is None else DENS[discovered], "discovered_round": discovered,
        "stop_reason": "logistic fit: plateau observed"})
    return run_dir


def test_isotonic_is_the_pool_adjacent_violators_fit():
    from sklearn.isotonic import IsotonicRegression

    assert list(isotonic(VAL)) == pytest.approx([0.40, 0.55, 0.70, 0.82, 0.90, 0.955, 0.955, 0.955, 0.955, 0.96, 0.96])
    y = np.random.default_rng(0).random(40)
    assert isotonic(y) == pytest.approx(IsotonicRegression().fit_transform(np.arange(40), y))


def test_the_oracle_of_a_synthetic_curve(tmp_path):
    late = run_discovery(fake_run(tmp_path, 0, discovered=8))
    # plateau: the fitted maximum 0.96; the first fitted point within 0.01 of it is index 5 (0.955)
    assert late["plateau_val_accuracy"] == pytest.approx(0.96)
    assert late["oracle_density"] == DENS[5] and late["oracle_round"] == 5 and late["oracle_val_fitted"] == pytest.approx(0.955)
    assert late["oracle_test_accuracy"] == 0.94  # reported, never used to decide
    assert late["error_steps"] == pytest.approx(3.0) and late["error_rounds"] == 3
    # the dip at the discovered density counts as its fitted 0.955, not as 0.94
    assert late["discovered_val_accuracy"] == 0.94 and late["val_shortfall"] == pytest.approx(0.005)
    assert late["test_shortfall"] == pytest.approx(0.0) and late["tol"] == 0.01
    early = run_discovery(fake_run(tmp_path, 1, discovered=3))
    assert early["oracle_density"] == DENS[5] and early["error_steps"] == pytest.approx(-2.0)
    assert early["val_shortfall"] == pytest.approx(0.96 - 0.82) and early["test_shortfall"] == pytest.approx(0.95 - 0.80)
    # a tolerance given overrides the run's own
    assert run_discovery(tmp_path / "grower-toy-s1", tol=0.2)["oracle_density"] == DENS[3]

    per_run = discovery_table(tmp_path)
    assert list(per_run["seed"]) == [0, 1] and set(per_run["family"]) == {"growth"} and set(per_run["variant"]) == {""}
    (agg,) = aggregate_discovery(per_run).to_dict("records")
    assert agg["seeds"] == 2 and agg["label"] == "Grower"
    assert agg["discovered_density_mean"] == pytest.approx(0.01 * 1.25**5.5)  # geometric
    assert (agg["discovered_density_min"], agg["discovered_density_max"]) == (DENS[3], DENS[8])
    assert agg["oracle_density_mean"] == pytest.approx(DENS[5]) and agg["oracle_density_min"] == agg["oracle_density_max"] == DENS[5]
    assert (agg["error_steps_mean"], agg["error_steps_min"], agg["error_steps_max"]) == pytest.approx((0.5, -2.0, 3.0))
    assert agg["val_shortfall_mean"] == pytest.approx((0.005 + 0.14) / 2) and agg["val_shortfall_max"] == pytest.approx(0.14)
    assert agg["discovered_max_over_min"] == pytest.approx(1.25**5)


def test_one_noisy_spike_neither_sets_the_plateau_nor_the_oracle():
    spiked = [0.40, 0.55, 0.99, 0.70, 0.82, 0.90, 0.95, 0.96, 0.96, 0.96, 0.96]
    curve = full_curve([{"round": r, "density": d, "val_accuracy": v, "test_accuracy": v, "phase": "extensive"}
                        for r, (d, v) in enumerate(zip(DENS, spiked))])
    assert curve.plateau == pytest.approx(0.96) and curve.oracle_index(0.01) == 6  # the raw curve would say 0.99 and index 2


def test_no_full_curve_or_no_discovered_density_gives_none(tmp_path):
    assert run_discovery(fake_run(tmp_path, 0, discovered=1, points=2)) is None
    assert run_discovery(fake_run(tmp_path, 1, discovered=None)) is None
    assert discovery_table(tmp_path).empty


# ------------------------------------------------------------------ (c) the command's errors


def _fails(capsys, *argv):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_the_commands_errors_are_one_line_and_exit_2(tmp_path, capsys):
    run_dir = fake_run(tmp_path / "runs", 0, discovered=8)
    err = _fails(capsys, run_dir, "--rule", "nope")
    assert "'nope'" in err and all(name in err for name in STOP_RULES.names())
    assert "'nope'" in _fails(capsys, run_dir, "--set", "nope=1")
    assert "did you mean tol" in _fails(capsys, run_dir, "--set", "tl=0.1")
    assert "confirm=abc" in _fails(capsys, run_dir, "--set", "confirm=abc")
    assert "growth.stop.tol" in _fails(capsys, run_dir, "--set", "tol=2")
    (tmp_path / "empty").mkdir()
    assert "no run directories" in _fails(capsys, tmp_path / "empty")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "summary.json").write_text(json.dumps({"status": "finished"}))
    assert "no rounds.csv" in _fails(capsys, bare)
    assert "no such directory" in _fails(capsys, tmp_path / "nowhere")
    # the records of a fake run replay too (no training anywhere)
    assert main([str(run_dir), "--rule", "none"]) == 0 and NEVER_FIRED in capsys.readouterr().out


def test_the_command_runs_as_a_module_without_a_traceback(tmp_path):
    run_dir = fake_run(tmp_path, 0, discovered=8)
    done = subprocess.run([sys.executable, "-m", "analysis.replay", str(run_dir), "--rule", "nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "valid are" in done.stderr


# ------------------------------------------------------------------ (d) the report and the figure


def test_write_report_writes_discovery_tables_and_a_figure(full, tmp_path):
    run_dir, summary = full
    out = tmp_path / "report"
    names = {f.name for f in write_report(run_dir, out)}
    assert {"discovery.md", "discovery.csv", figure_name(run_dir)} <= names
    assert (out / figure_name(run_dir)).read_bytes().startswith(b"\x89PNG")
    md = (out / "discovery.md").read_text()
    assert "oracle" in md.lower() and run_dir.name in md
    csv = pd.read_csv(out / "discovery.csv")
    assert len(csv) == 1 and csv["discovered_density"].iloc[0] == summary["discovered_density"]
    html = (out / "report.html").read_text()
    assert "Discovered against oracle density" in html and "error (growth steps)" in html

    found = run_discovery(run_dir)
    (ax,) = plot_discovery(run_dir).axes
    lines = {ln.get_gid(): ln for ln in ax.get_lines()}
    assert {"proxy", "logistic_fit", "val_curve", "val_isotonic", "plateau_tol", "discovered", "oracle"} <= set(lines)
    assert list(lines["discovered"].get_xdata()) == [summary["discovered_density"]] * 2
    assert list(lines["oracle"].get_xdata()) == [found["oracle_density"]] * 2
    assert len(lines["proxy"].get_xdata()) == len(read_rounds(run_dir)) and ax.get_xscale() == "log"
    assert ax.get_legend() is not None


def test_a_report_without_full_curves_has_no_discovery_files(tmp_path, stopped):
    from analysis.load import load_table
    from analysis.report import _discovery

    run_dir, _ = stopped  # extensive training of the discovered density only: one curve point
    assert run_discovery(run_dir) is None and discovery_table(run_dir).empty
    assert _discovery(load_table(run_dir), tmp_path) == ([], "") and not list(tmp_path.iterdir())


def test_replay_reads_another_recorded_proxy_signal_when_asked(tmp_path, capsys):
    """--proxy COLUMN: the rule reads that recorded signal as proxy_accuracy; a copy of the run's own
    proxy decides as the run did, one that levels off sooner earlier; a signal the run lacks is one line, exit 2."""
    run_dir = fake_run(tmp_path / "runs", 0, discovered=8)
    rows = read_rounds(run_dir)
    own = replay_run(run_dir)[0]
    sooner = [0.5, 0.8] + [0.9] * (len(rows) - 2)
    records.atomic_write_csv(run_dir / "rounds.csv", [{**r, "ema_accuracy": r["proxy_accuracy"], "unannealed_accuracy": v}
                                                      for r, v in zip(rows, sooner)])
    same = replay_run(run_dir, proxy="ema_accuracy")[0]
    assert same["proxy"] == "ema_accuracy" and same["discovered_round"] == own["discovered_round"]
    levelled = replay_run(run_dir, proxy="unannealed_accuracy")[0]
    assert levelled["fired"] and levelled["discovered_round"] == 4 < own["discovered_round"] == 8
    assert levelled["proxy_accuracy"] == 0.9
    assert main([str(run_dir), "--proxy", "unannealed_accuracy"]) == 0
    assert "unannealed_accuracy" in capsys.readouterr().out
    assert "valid are ['proxy_accuracy', 'unannealed_accuracy', 'ema_accuracy']" in _fails(capsys, run_dir, "--proxy", "nope")
    records.atomic_write_csv(run_dir / "rounds.csv", rows)
    err = _fails(capsys, run_dir, "--proxy", "ema_accuracy")
    assert "not recorded in round(s) [0, 1, 2, 3, 4]" in err and "this run has ['proxy_accuracy']" in err


def test_the_summary_is_one_row_per_rule_over_the_seeds(tmp_path, capsys):
    """--summary: the runs' discovered densities and errors in order, the worst error and shortfall,
    the spread (largest / smallest) and the runs fired on, per path and rule."""
    from analysis.replay import replay, rule_summary

    root = tmp_path / "runs"
    for seed in (0, 1):
        fake_run(root, seed, discovered=8)
    sooner = [0.5, 0.8] + [0.9] * (len(DENS) - 2)
    rows = read_rounds(root / "grower-toy-s1")
    records.atomic_write_csv(root / "grower-toy-s1" / "rounds.csv",
                             [{**r, "proxy_accuracy": v} for r, v in zip(rows, sooner)])
    table = replay([root], ["logistic", "none"])
    per_run = table[table["rule"] == "logistic"].set_index("run")
    summary = rule_summary(table).set_index("rule")
    logistic = summary.loc["logistic"]
    d0, d1 = per_run.loc["grower-toy-s0", "discovered_density"], per_run.loc["grower-toy-s1", "discovered_density"]
    assert d1 < d0 and logistic["spread"] == pytest.approx(d0 / d1)
    assert logistic["discovered"] == f"{100 * d0:.1f}, {100 * d1:.1f}"
    errors = list(per_run["error_steps"])
    assert logistic["worst_error"] == pytest.approx(max(abs(e) for e in errors))
    assert logistic["within_2_steps"] == sum(abs(e) <= 2 for e in errors)
    assert logistic["worst_shortfall"] == pytest.approx(per_run["val_shortfall"].max())
    assert logistic["fired"] == 2 and summary.loc["none", "fired"] == 0 and logistic["runs"] == 2
    assert main([str(root), "--rule", "logistic", "--summary"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("| runs | dataset | rule |") and len(printed) == 3 and "| 2/2 |" in printed[2]
