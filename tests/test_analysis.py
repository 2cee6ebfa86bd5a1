"""analysis: run records -> one tidy table -> figures (checked through their data), density
tables and a self-contained HTML report; the W&B path through a stand-in for wandb.Api."""

import base64
import json
import math
import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from analysis import COLUMNS, load_table, load_wandb_table, write_report
from analysis.__main__ import main as cli
from analysis.plots import (
    discovered_points,
    plot_accuracy_cost,
    plot_cost_density,
    plot_growth_timing,
    plot_layer_density,
    plot_performance_density,
)
from analysis.tables import density_table, to_latex, to_markdown
from growth import records
from tests.conftest import compose_cfg

LAYERS = ("layers.0.weight", "layers.1.weight", "layers.2.weight")
DENS = [0.01, 0.0125, 0.015625, 0.01953125]


# What each method's records say of it (summary.json; curve.csv rows carry family, phase, label).
META = {
    "pwmpr": {"family": "growth", "label": "PWMPR", "short_label": "PWMPR", "color": "tab:red", "headline": True, "order": 10},
    "pwmp": {"family": "growth", "label": "PWMP (top-k ablation)", "short_label": "PWMP", "color": "tab:orange", "headline": False,
             "order": 20},
    "rg": {"family": "growth", "label": "RG (random growth)", "short_label": "RG", "color": "tab:blue", "headline": False, "order": 30},
    "gg": {"family": "growth", "label": "GG (gradient growth)", "short_label": "GG", "color": "tab:green", "headline": False, "order": 35},
    "imp_c": {"family": "pruning", "label": "IMP-C", "short_label": "IMP-C", "color": "tab:purple", "headline": False, "order": 40},
    "rigl": {"family": "fixed_density", "label": "RigL (matched budget)", "short_label": "RigL", "color": "tab:brown", "headline": False,
             "order": 50},
    "phew": {"family": "fixed_density", "label": "PHEW (matched budget)", "short_label": "PHEW", "color": "tab:pink", "headline": False,
             "order": 60},
    "dense": {"family": "dense", "label": "dense", "short_label": "dense", "color": "black", "headline": False, "order": 90},
}


def curve_phase(point):
    name = str(point.get("point", ""))
    return "extensive" if name.startswith("extensive") else "level" if name.startswith("level") else "train"


def write_records(run_dir: Path, summary, curve=(), rounds=(), meta=None):
    """summary.json, curve.csv (and rounds.csv) of a run; with `meta`, in the format that carries
    the method's fields (without: as records were written before those fields existed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if meta is not None:
        summary = {**summary, **meta}
        curve = [{**c, "family": meta["family"], "phase": curve_phase(c), "label": meta["label"]} for c in curve]
    else:  # every old summary had these keys, null for methods that do not grow
        summary = {"seed_density": None, "discovered_density": None, "test_accuracy": None, **summary}
    if rounds:
        records.atomic_write_csv(run_dir / "rounds.csv", list(rounds))
    records.atomic_write_csv(run_dir / "curve.csv", list(curve))
    records.atomic_write_json(run_dir / "summary.json", summary)
    return run_dir


def write_run(root: Path, method: str, seed: int, *, status="finished", rounds=(), curve=(), summary=None, overrides=(), legacy=False):
    """A run directory in the framework's own formats (config.yaml from the real config)."""
    cfg = compose_cfg([f"method={method}", f"seed={seed}", "output.progress=false", *overrides], tmp_path=root)
    run_dir = records.run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    records.atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return write_records(run_dir, {"method": method, "dataset": "digits", "model": "mlp", "seed": seed, "status": status, **(summary or {})},
                         curve, rounds, meta=None if legacy else META[method])


def growth_rounds(accs, batches=54, stop_at=None, layer_scale=(0.9, 0.6, 5.0)):
    rows = []
    for r, (d, acc) in enumerate(zip(DENS, accs)):
        row = {"round": r, "density": d, "proxy_accuracy": acc, "batches": batches + r, "cost_epochs": 0.03 * (r + 1),
               "cost_flops": 1e6 * (r + 1), "wall_seconds": 0.1 * (r + 1), "stop": r == stop_at, "fit_valid": False}
        row.update({f"layer_density:{n}": min(1.0, s * d) for n, s in zip(LAYERS, layer_scale)})
        rows.append(row)
    return rows


def extensive_curve(tests):
    return [{"point": f"extensive:{r}", "round": r, "density": d, "val_accuracy": t + 0.01, "test_accuracy": t,
             "test_loss": 0.1, "cost_epochs": 0.03 * (r + 1) + 1.0, "cost_flops": 1e9, "wall_seconds": 1.0}
            for r, (d, t) in enumerate(zip(DENS, tests))]


def growth_summary(disc_round, reason="logistic fit: plateau observed"):
    return {"discovered_density": DENS[disc_round], "discovered_round": disc_round, "stop_reason": reason,
            "cost": {"epochs": 1.0 + 0.03 * (disc_round + 1)}}


def write_study(root: Path, legacy: bool = False):
    """A small comparison: dense x2 seeds, PWMPR x2 seeds (+ a diverged third), RG (stopped by a
    cap), IMP-C, PHEW at two densities, and a study.json with a job that never ran."""
    dirs = {}
    dirs["dense0"] = write_run(root, "dense", 0, legacy=legacy, curve=[{"point": "train", "density": 1.0, "val_accuracy": 0.95,
                                                                        "test_accuracy": 0.96, "cost_epochs": 1.0}])
    dirs["dense1"] = write_run(root, "dense", 1, legacy=legacy, curve=[{"point": "train", "density": 1.0, "val_accuracy": 0.95,
                                                                        "test_accuracy": 0.98, "cost_epochs": 1.0}])
    dirs["pwmpr0"] = write_run(root, "pwmpr", 0, legacy=legacy, rounds=growth_rounds([0.5, 0.6, 0.7, 0.72], stop_at=3),
                               curve=extensive_curve([0.80, 0.85, 0.90, 0.91]), summary=growth_summary(2))
    dirs["pwmpr1"] = write_run(root, "pwmpr", 1, legacy=legacy, rounds=growth_rounds([0.52, 0.62, 0.71, 0.73], stop_at=3),
                               curve=extensive_curve([0.82, 0.87, 0.92, 0.95]), summary=growth_summary(3))
    dirs["pwmpr2"] = write_run(root, "pwmpr", 2, legacy=legacy, status="diverged", rounds=growth_rounds([0.1, 0.1]),
                               curve=extensive_curve([0.0]), summary={"error": "non-finite loss", "where": {"round": 1}})
    dirs["rg0"] = write_run(root, "rg", 0, legacy=legacy, rounds=growth_rounds([0.4, 0.5, 0.55, 0.6], stop_at=3),
                            curve=extensive_curve([0.70, 0.75, 0.80, 0.85]),
                            summary=growth_summary(3, "reached growth.max_density=0.02"))
    imp = [{"point": f"level:{i}", "level": i, "density": d, "val_accuracy": 0.9, "test_accuracy": a, "cost_epochs": c}
           for i, (d, a, c) in enumerate([(1.0, 0.97, 1.0), (0.8, 0.96, 1.25), (0.64, 0.95, 1.5)])]
    dirs["imp0"] = write_run(root, "imp_c", 0, legacy=legacy, curve=imp)
    for d, acc in ((0.1, 0.93), (0.2, 0.94)):
        dirs[f"phew{d}"] = write_run(root, "phew", 0, legacy=legacy, overrides=[f"method.density={d}"],
                                     curve=[{"point": "train", "density": d, "val_accuracy": 0.9, "test_accuracy": acc, "cost_epochs": 1.2}])
    study_dir = root / "studies" / "compare-abc"
    jobs = [{"label": f"{k}", "run_dir": str(v), "status": "finished", "stage": 1, "error": None} for k, v in dirs.items()]
    jobs.append({"label": "rigl/s0", "run_dir": None, "status": "not run: reference did not finish", "stage": 2, "error": None})
    records.atomic_write_json(study_dir / "study.json", {"study": {"name": "compare", "seeds": [0, 1]}, "overrides": ["trainer.epochs=6"],
                                                         "seconds": 1.0, "jobs": jobs})
    return types.SimpleNamespace(root=root, dirs=dirs, study_dir=study_dir)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def table(study):
    return load_table(study.study_dir)


def line(ax, gid):
    found = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    assert len(found) == 1, [ln.get_gid() for ln in ax.get_lines()]
    return found[0]


# ------------------------------------------------------------------ the table


def test_load_table_has_one_row_per_run_and_point(table, study):
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert {f"layer_density:{n}" for n in LAYERS} <= set(table.columns)
    pw = table[(table["method"] == "pwmpr") & (table["status"] == "finished")]
    assert sorted(pw["phase"].value_counts().items()) == [("extensive", 8), ("growth round", 8)]
    rounds = pw[(pw["phase"] == "growth round") & (pw["seed"] == 0)]
    assert rounds["val_accuracy"].tolist() == [0.5, 0.6, 0.7, 0.72] and rounds["test_accuracy"].isna().all()
    assert rounds["batches"].tolist() == [54, 55, 56, 57]
    # discovered: the round and its extensive point, at the summary's density
    disc = pw[pw["discovered"]]
    assert sorted(zip(disc["seed"], disc["phase"], disc["density"])) == [
        (0, "extensive", DENS[2]), (0, "growth round", DENS[2]), (1, "extensive", DENS[3]), (1, "growth round", DENS[3])]
    assert set(table.loc[table["method"] == "imp_c", "phase"]) == {"level"}
    assert set(table.loc[table["method"].isin(["dense", "phew"]), "phase"]) == {"train"}
    # the diverged run and the job that never ran: one row each, with their status, no points
    div = table[table["status"] == "diverged"]
    assert len(div) == 1 and div.iloc[0]["phase"] == "run" and div.iloc[0]["error"] == "non-finite loss"
    assert math.isnan(div.iloc[0]["test_accuracy"])
    never = table[table["method"] == "rigl"]
    assert len(never) == 1 and never.iloc[0]["status"].startswith("not run") and never.iloc[0]["phase"] == "run"
    assert table["run_dir"].nunique(dropna=True) == len(study.dirs)
    assert table.attrs["studies"] and str(study.dirs["pwmpr0"]) in table.attrs["configs"]


def test_load_table_accepts_a_results_root_and_run_dirs(study, table):
    from_root = load_table(study.root)  # every run directory below it; no study placeholders
    assert from_root["run_dir"].nunique() == len(study.dirs) and not (from_root["method"] == "rigl").any()
    two = load_table([study.dirs["dense0"], study.dirs["dense1"]])
    assert sorted(two["test_accuracy"]) == [0.96, 0.98]
    with pytest.raises(ValueError, match="not a run directory"):
        load_table(study.root / "missing")


def test_runs_that_differ_in_settings_are_variants_not_seeds(tmp_path):
    for seed in (0, 1):
        for timing in ("growth.timing.epochs=3", "growth.timing.mode=adaptive"):
            write_run(tmp_path, "pwmpr", seed, overrides=[timing], rounds=growth_rounds([0.5, 0.6]),
                      curve=extensive_curve([0.8, 0.9]), summary=growth_summary(1))
    t = load_table(tmp_path)
    variants = sorted(t["variant"].unique())
    assert variants[0].startswith("adaptive (eval every 20 batches") and variants[1] == "fixed 3 epochs/round"
    assert (t.groupby("variant")["seed"].nunique() == 2).all()


def test_settings_that_never_change_what_a_run_computes_make_no_variant(tmp_path):
    # e.g. a section a later version added (sweep) or the logger: the two seeds are one series
    for seed, extra in ((0, []), (1, ["logger=wandb", "sweep.cost_penalty=0.5", "trainer.cpu_threads=1"])):
        write_run(tmp_path, "pwmpr", seed, overrides=extra, rounds=growth_rounds([0.5, 0.6]),
                  curve=extensive_curve([0.8, 0.9]), summary=growth_summary(1))
    t = load_table(tmp_path)
    assert list(t["variant"].unique()) == [""] and t["seed"].nunique() == 2


# ------------------------------------------------------------------ figures, through their data


def test_performance_density_draws_seed_means_bands_dense_and_discovered(table):
    fig = plot_performance_density(table)
    a, b = fig.axes[:2]
    assert a.get_xscale() == "log" and b.get_xscale() == "log"
    assert "density" in a.get_xlabel() and "%" in a.get_ylabel() and "Fig. 4" in a.get_title() and "Fig. 5" in b.get_title()
    pw = line(a, "pwmpr|")
    assert list(pw.get_xdata()) == pytest.approx(DENS)
    # mean of the two finished seeds; the diverged seed's 0.0 never enters
    assert list(pw.get_ydata()) == pytest.approx([81.0, 86.0, 91.0, 93.0])
    band = a.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(80.0) and band[:, 1].max() == pytest.approx(95.0)
    assert list(line(a, "rg|").get_ydata()) == pytest.approx([70, 75, 80, 85])
    assert list(line(a, "dense").get_ydata()) == pytest.approx([97.0, 97.0])  # mean of the dense seeds
    star = line(a, "discovered|pwmpr|")
    assert star.get_xdata()[0] == pytest.approx(math.sqrt(DENS[2] * DENS[3]))  # geometric mean over seeds
    assert star.get_ydata()[0] == pytest.approx(100 * (0.90 + 0.95) / 2)
    assert star.get_markerfacecolor() != "white"
    assert line(a, "discovered|rg|").get_markerfacecolor() == "white"  # stopped by a cap, not the rule
    assert list(line(a, "discovered-range|pwmpr|").get_xdata()) == pytest.approx([DENS[2], DENS[3]])
    # panel (b): PWMPR against the baselines; no growth-only methods there
    gids = {ln.get_gid() for ln in b.get_lines()}
    assert {"pwmpr|", "imp_c|", "phew|", "dense"} <= gids and "rg|" not in gids
    assert list(line(b, "imp_c|").get_xdata()) == pytest.approx([0.64, 0.8, 1.0])
    assert list(line(b, "phew|").get_ydata()) == pytest.approx([93.0, 94.0])
    labels = [t.get_text() for t in a.get_legend().get_texts()]
    assert "PWMPR" in labels and any(t.startswith("dense, 100% density (97.00%)") for t in labels)


def test_cost_density_shows_cumulative_cost_and_the_dense_unit(table):
    fig = plot_cost_density(table)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and "dense training runs" in ax.get_ylabel()
    assert list(line(ax, "dense").get_ydata()) == [1.0, 1.0]
    # PWMPR and RG have the very same costs here: one line, both named
    merged = line(ax, "pwmpr|;rg|")
    assert list(merged.get_ydata()) == pytest.approx([1.03, 1.06, 1.09, 1.12])
    assert "PWMPR" in merged.get_label() and "RG" in merged.get_label()
    assert list(line(ax, "imp_c|").get_ydata()) == pytest.approx([1.5, 1.25, 1.0])


def test_accuracy_cost_pairs_each_points_cost_and_accuracy(table):
    fig = plot_accuracy_cost(table)
    ax = fig.axes[0]
    imp = line(ax, "imp_c|")
    assert list(imp.get_xdata()) == pytest.approx([1.5, 1.25, 1.0]) and list(imp.get_ydata()) == pytest.approx([95, 96, 97])
    assert line(ax, "dense").get_xdata()[0] == pytest.approx(1.0)
    assert fig.axes[1].get_xlim()[1] < 1.5  # the zoom leaves IMP-C's costly levels out


def test_growth_timing_has_one_line_per_schedule(tmp_path):
    write_run(tmp_path, "pwmpr", 0, rounds=growth_rounds([0.5, 0.6, 0.7], batches=54), curve=extensive_curve([0.8, 0.9, 0.91]),
              summary=growth_summary(2))
    write_run(tmp_path, "pwmpr", 0, overrides=["growth.timing.mode=adaptive"], rounds=growth_rounds([0.55, 0.65, 0.7], batches=120),
              curve=extensive_curve([0.82, 0.88, 0.9]), summary=growth_summary(2))
    fig = plot_growth_timing(load_table(tmp_path))
    a, b, c = fig.axes[:3]
    assert all(ax.get_xscale() == "log" for ax in (a, b, c))
    fixed = line(a, "fixed 3 epochs/round")
    assert list(fixed.get_ydata()) == [54, 55, 56]
    adaptive = [ln for ln in a.get_lines() if ln.get_gid().startswith("adaptive")]
    assert len(adaptive) == 1 and list(adaptive[0].get_ydata()) == [120, 121, 122]
    assert list(line(b, "fixed 3 epochs/round").get_ydata()) == pytest.approx([50, 60, 70])
    assert list(line(c, "fixed 3 epochs/round").get_ydata()) == pytest.approx([80, 90, 91])


def test_layer_density_follows_the_rounds_columns(table):
    fig = plot_layer_density(table)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "growth round" and "PWMPR, seed 0" in ax.get_title()
    first = line(ax, "layer_density:layers.0.weight")
    assert list(first.get_xdata()) == [0, 1, 2, 3]
    assert list(first.get_ydata()) == pytest.approx([100 * 0.9 * d for d in DENS])
    assert list(line(ax, "overall").get_ydata()) == pytest.approx([100 * d for d in DENS])
    assert [a.get_title().split(",")[0] for a in fig.axes] == ["PWMPR", "RG (random growth)"]


def test_discovered_points_summarise_seeds(table):
    disc = discovered_points(table).set_index("method")
    assert disc.loc["pwmpr", "n"] == 2 and bool(disc.loc["pwmpr", "by_rule"]) and not bool(disc.loc["rg", "by_rule"])
    assert disc.loc["pwmpr", "cost_epochs"] == pytest.approx(1.0 + (0.09 + 0.12) / 2)


# ------------------------------------------------------------------ tables


def test_density_table_takes_the_nearest_point_within_the_tolerance(table):
    dt = density_table(table, densities=(0.0125, 0.1, 0.8), tolerance=1.12)
    row = dt[(dt["method"] == "pwmpr") & (dt["at"] == "1.25%")].iloc[0]
    assert row["seeds"] == 2 and row["test_accuracy_mean"] == pytest.approx(0.86)
    assert row["test_accuracy_std"] == pytest.approx(np.std([0.85, 0.87], ddof=1))
    disc = dt[(dt["method"] == "pwmpr") & (dt["at"] == "discovered")].iloc[0]
    assert disc["density_mean"] == pytest.approx((DENS[2] + DENS[3]) / 2) and disc["test_accuracy_mean"] == pytest.approx(0.925)
    # nothing of PWMPR near 10% (its last point is 1.95%): no row rather than a far point
    assert dt[(dt["method"] == "pwmpr") & (dt["at"] == "10%")].empty
    phew = dt[(dt["method"] == "phew") & (dt["at"] == "10%")].iloc[0]
    assert phew["test_accuracy_mean"] == pytest.approx(0.93) and math.isnan(phew["test_accuracy_std"])
    assert dt[(dt["method"] == "imp_c") & (dt["at"] == "80%")].iloc[0]["cost_epochs_mean"] == pytest.approx(1.25)
    assert dt[dt["method"] == "dense"].iloc[0]["at"] == "reference (dense)"
    assert sorted(dt.loc[dt["method"] == "rg", "at"]) == ["1.25%", "discovered"]
    md = to_markdown(dt)
    # two seeds: the mean and their range, never passed off as an interval
    assert "| PWMPR | 1.25% | 2 | 1.25 ± 0.00 | 86.00 (range 85.00–87.00) |" in md
    tex = to_latex(dt, caption="at 10% density")
    assert "\\toprule" in tex and "1.25\\%" in tex and "86.00 (range 85.00--87.00)" in tex and "at 10\\% density" in tex
    with pytest.raises(ValueError):
        density_table(table, tolerance=0.5)


# ------------------------------------------------------------------ report and command line


def test_write_report_writes_figures_tables_and_a_self_contained_html(study, tmp_path):
    out = tmp_path / "report"
    files = write_report(study.study_dir, out)
    names = {f.name for f in files}
    assert {"points.csv", "density_table.md", "density_table.csv", "density_table.tex", "report.html"} <= names
    for key in ("performance_density", "cost_density", "accuracy_cost", "growth_timing", "layer_density"):
        assert {f"{key}_digits_mlp.png", f"{key}_digits_mlp.pdf"} <= names
    assert all(f.exists() and f.stat().st_size > 0 for f in files)
    assert (out / "performance_density_digits_mlp.pdf").read_bytes().startswith(b"%PDF")
    assert pd.read_csv(out / "points.csv")["run_dir"].nunique() == len(study.dirs)
    html = (out / "report.html").read_text()
    images = re.findall(r'<img alt="([a-z_]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert [k for k, _ in images] == ["performance_density", "cost_density", "accuracy_cost", "growth_timing", "layer_density"]
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for _, data in images)
    assert not re.search(r'(src|href)="(http|file|/)', html)  # nothing outside the file
    assert "not run: reference did not finish" in html and "non-finite loss" in html
    assert "compare" in html and "trainer.epochs=6" in html  # the study's configuration
    assert "PWMPR" in html and "discovered" in html


def test_the_command_line_writes_beside_the_input_and_reports_bad_paths(study, capsys, tmp_path):
    assert cli([str(study.dirs["dense0"]), str(study.dirs["dense1"])]) == 0
    assert (study.root / "analysis" / "report.html").exists()  # their common parent
    assert "reference (dense)" in capsys.readouterr().out
    assert cli([str(tmp_path / "nowhere")]) == 2
    with pytest.raises(SystemExit):
        cli([])


# ------------------------------------------------------------------ methods named only by their records

TOY = {"family": "fixed_density", "label": "Toy sparse", "short_label": "Toy", "color": None, "headline": False, "order": 65}
TOY_DENS = [0.05, 0.1, 0.2]


def write_toy_study(root: Path) -> Path:
    """By hand, no config: a method analysis has never heard of (toy_sparse: 3 densities x 2
    seeds) beside a headline growth run and a dense run, all in the current record format."""
    for seed in (0, 1):
        for d, acc in zip(TOY_DENS, (0.60, 0.70, 0.80)):
            write_records(root / f"toy_sparse-{d}-s{seed}", {"method": "toy_sparse", "dataset": "digits", "model": "mlp", "seed": seed,
                                                              "status": "finished", "density": d},
                          [{"point": "train", "density": d, "val_accuracy": acc, "test_accuracy": acc + 0.02 * seed,
                            "cost_epochs": 0.5 + d}], meta=TOY)
    write_records(root / "pwmpr-s0", {"method": "pwmpr", "dataset": "digits", "model": "mlp", "seed": 0, "status": "finished",
                                      **growth_summary(2)},
                  extensive_curve([0.80, 0.85, 0.90, 0.91]), growth_rounds([0.5, 0.6, 0.7, 0.72], stop_at=3), meta=META["pwmpr"])
    write_records(root / "dense-s0", {"method": "dense", "dataset": "digits", "model": "mlp", "seed": 0, "status": "finished",
                                      "density": 1.0},
                  [{"point": "train", "density": 1.0, "val_accuracy": 0.95, "test_accuracy": 0.97, "cost_epochs": 1.0}], meta=META["dense"])
    return root


def test_a_new_method_is_drawn_tabulated_and_reported_from_its_records_alone(tmp_path):
    root = write_toy_study(tmp_path / "results")
    t = load_table(root)
    toy = t[t["method"] == "toy_sparse"]
    assert len(toy) == 6 and set(toy["phase"]) == {"train"} and set(toy["family"]) == {"fixed_density"}
    assert set(toy["label"]) == {"Toy sparse"} and set(toy["short_label"]) == {"Toy"}
    # Fig. 5 (b): beside the headline growth method; not among the growth mechanisms (a)
    a, b = plot_performance_density(t).axes[:2]
    drawn = line(b, "toy_sparse|")
    assert drawn.get_label() == "Toy sparse"
    assert list(drawn.get_xdata()) == pytest.approx(TOY_DENS) and list(drawn.get_ydata()) == pytest.approx([61.0, 71.0, 81.0])
    assert {"pwmpr|", "dense"} <= {ln.get_gid() for ln in b.get_lines()} and "toy_sparse|" not in {ln.get_gid() for ln in a.get_lines()}
    assert "PWMPR" in b.get_title() and "Toy sparse" in [x.get_text() for x in b.get_legend().get_texts()]
    assert drawn.get_color() != line(b, "pwmpr|").get_color()  # a palette colour of its own
    (ax,) = plot_cost_density(t).axes
    cost = line(ax, "toy_sparse|")
    assert cost.get_label() == "Toy sparse" and list(cost.get_ydata()) == pytest.approx([0.55, 0.6, 0.7])
    assert "dense|" not in {ln.get_gid() for ln in ax.get_lines()}
    assert line(plot_accuracy_cost(t).axes[0], "toy_sparse|").get_label() == "Toy sparse"
    dt = density_table(t, densities=(0.1, 0.2))
    row = dt[(dt["method"] == "toy_sparse") & (dt["at"] == "10%")].iloc[0]
    assert row["label"] == "Toy sparse" and row["seeds"] == 2 and row["test_accuracy_mean"] == pytest.approx(0.71)
    assert "| Toy sparse | 10% | 2 | 10.00 ± 0.00 | 71.00 (range 70.00–72.00) |" in to_markdown(dt)
    assert dt[dt["method"] == "dense"].iloc[0]["at"] == "reference (dense)"
    assert list(dt["method"].drop_duplicates()) == ["pwmpr", "toy_sparse", "dense"]  # the records' order
    write_report(t, tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Toy sparse" in html and "toy_sparse" in html


def figure_series(fig):
    """Per axis, every line drawn: (gid, x, y)."""
    return [sorted((str(ln.get_gid()), tuple(np.round(np.asarray(ln.get_xdata(), float), 9)),
                    tuple(np.round(np.asarray(ln.get_ydata(), float), 9))) for ln in ax.get_lines()) for ax in fig.axes]


def test_records_without_the_method_fields_still_give_the_same_series(study, table, tmp_path):
    old = load_table(write_study(tmp_path / "results", legacy=True).study_dir)
    runs = old[old["phase"] != "run"].drop_duplicates("method").set_index("method")
    assert runs["family"].to_dict() == {"dense": "dense", "pwmpr": "growth", "rg": "growth", "imp_c": "pruning", "phew": "fixed_density"}
    assert (runs["label"] == runs.index).all()  # labelled by their names
    for fn in (plot_cost_density, plot_accuracy_cost, plot_growth_timing, plot_layer_density):
        assert figure_series(fn(old)) == figure_series(fn(table)), fn.__name__
    new_a, new_b = figure_series(plot_performance_density(table))[:2]
    old_a, old_b = figure_series(plot_performance_density(old))[:2]
    assert old_a == new_a
    # Old records do not say which growth method is the headline: every growth method is in (b).
    assert [s for s in old_b if "rg|" not in s[0]] == new_b and {s for s in old_a if "rg|" in s[0]} <= set(old_b)
    core = [c for c in density_table(table).columns if c != "label"]
    pd.testing.assert_frame_equal(density_table(old)[core], density_table(table)[core])
    assert "| pwmpr | discovered |" in to_markdown(density_table(old))


# ------------------------------------------------------------------ W&B


class FakeSummary:
    """Like wandb.apis.public's HTTPSummary: mapping access plus the raw `_json_dict`."""

    def __init__(self, data):
        self._json_dict = data

    def __getitem__(self, key):
        return self._json_dict[key]

    def get(self, key, default=None):
        return self._json_dict.get(key, default)


class FakeApiRun:
    """Shaped like wandb.apis.public.Run: id, name, group, job_type, state, path, config (flat
    keys as logged), summary, and scan_history() yielding one dict per logged step."""

    def __init__(self, captured, entity, project):
        self.id = captured.kwargs["id"]
        self.name = captured.kwargs["name"]
        self.group = captured.kwargs["group"]
        self.job_type = captured.kwargs["job_type"]
        self.path = [entity, project, self.id]
        self.config = {k: v for k, v in captured.kwargs["config"].items() if not k.startswith("_")}
        self.summary = FakeSummary(json.loads(json.dumps(captured.summary, default=str)))
        self.state = "finished" if captured.exit_code == 0 else "failed"
        self._history = captured.history

    def scan_history(self, keys=None, page_size=1000, min_step=None, max_step=None):
        for row in self._history:
            if keys is None or all(k in row for k in keys):
                yield dict(row) if keys is None else {k: row[k] for k in ["_step", *keys] if k in row}


class FakeApi:
    """A stand-in for wandb.Api(): no W&B server is reachable from the tests, so it serves the
    runs captured from real runs' loggers in the shape the public API returns them."""

    def __init__(self, runs):
        self._runs = runs
        self.queries = []

    def runs(self, path, filters=None, order=None, per_page=50):
        self.queries.append((path, filters))
        entity, project = path.split("/")
        return [FakeApiRun(r, entity, project) for r in self._runs
                if r.kwargs["project"] == project and all(r.kwargs.get(k) == v for k, v in (filters or {}).items())]


class CapturedRun:
    """What a logger sent to W&B: init arguments, history rows, summary, exit code."""

    def __init__(self, kwargs):
        self.kwargs, self.history, self.summary, self.exit_code, self.metrics = kwargs, [], {}, None, {}

    def define_metric(self, name, step_metric=None, **kw):
        self.metrics[name] = step_metric

    def log(self, data, step=None):
        row = {"_step": len(self.history) if step is None else step}
        for k, v in data.items():
            row[k] = {"_type": "table-file", "path": f"media/table/{k}.table.json"} if isinstance(v, FakeTable) else v
        self.history.append(row)
        self.summary.update({k: v for k, v in row.items() if k != "_step"})

    def finish(self, exit_code=0):
        self.exit_code = exit_code


class FakeTable:
    def __init__(self, columns, data):
        self.columns, self.data = columns, data


def test_the_wandb_path_gives_the_same_table_as_the_local_records(make_cfg, monkeypatch):
    from growth.run import run

    captured = []

    def init(**kwargs):
        captured.append(CapturedRun(kwargs))
        return captured[-1]

    fake = types.SimpleNamespace(init=init, Settings=lambda **kw: None, Table=FakeTable)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    common = ["logger=wandb", "logger.project=growth", "growth.max_rounds=3", "extensive.which=all", "trainer.epochs=2"]
    dirs = [Path(run(make_cfg(*common, "logger.group=sweep-a", f"seed={s}"))["run_dir"]) for s in (0, 1)]
    dirs.append(Path(run(make_cfg(*common, "logger.group=sweep-a", "method=imp_c", "method.min_density=0.5"))["run_dir"]))
    run(make_cfg(*common, "logger.group=other", "seed=5"))
    api = FakeApi(captured)
    remote = load_wandb_table("me/growth", group="sweep-a", api=api)
    assert api.queries == [("me/growth", {"group": "sweep-a"})]
    local = load_table(dirs)
    key = ["run_dir", "phase", "round", "density"]
    core = ["method", "dataset", "model", "seed", "density", "test_accuracy", "val_accuracy", "cost_epochs", "cost_flops",
            "wall_seconds", "phase", "discovered", "status", "run_dir", "timing", "round", "batches", "stop_reason",
            *[c for c in local.columns if c.startswith("layer_density:")]]
    a = remote[core].sort_values(key).reset_index(drop=True)
    b = local[core].sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) and (b["phase"] == "growth round").sum() == 6 and (b["phase"] == "level").sum() >= 3
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert set(remote["seed"]) == {0} | {1} and 5 not in set(remote["seed"])
    assert set(remote["phase"]) == {"growth round", "extensive", "level"}


def test_a_failed_wandb_run_appears_with_its_status_only():
    class Run:
        id, path, state = "x1", ["me", "p", "x1"], "crashed"
        config = {"method": "pwmpr", "dataset": "digits", "model": "mlp", "seed": 0, "run_dir": "/r/x1"}
        summary = FakeSummary({})

        def scan_history(self, keys=None, page_size=1000):
            return iter([{"_step": 0, "growth/density": 0.01, "growth/round": 0, "growth/proxy_accuracy": 0.3}])

    api = types.SimpleNamespace(runs=lambda path, filters=None: [Run()])
    t = load_wandb_table("me/p", api=api)
    assert len(t) == 1 and t.iloc[0]["status"] == "failed" and t.iloc[0]["phase"] == "run"
    with pytest.raises(ValueError, match="no W&B runs"):
        load_wandb_table("me/p", api=types.SimpleNamespace(runs=lambda path, filters=None: []))


def test_the_wandb_path_carries_the_method_fields_of_the_summary():
    """The W&B summary mirrors summary.json, so it names the method's family and labels; the
    curve rows' strings never reach W&B history (only numbers do)."""

    class Run:
        id, path, state = "t1", ["me", "p", "t1"], "finished"
        config = {"method": "toy_sparse", "dataset": "digits", "model": "mlp", "seed": 0, "run_dir": "/r/t1"}
        summary = FakeSummary({"status": "finished", "method": "toy_sparse", "dataset": "digits", "model": "mlp", "seed": 0,
                               "density": 0.1, **TOY})

        def scan_history(self, keys=None, page_size=1000):
            return iter([{"_step": i, "curve/density": d, "curve/test_accuracy": 0.7 + d, "curve/cost_epochs": 0.5 + d}
                         for i, d in enumerate(TOY_DENS)])

    t = load_wandb_table("me/p", api=types.SimpleNamespace(runs=lambda path, filters=None: [Run()]))
    assert set(t["family"]) == {"fixed_density"} and set(t["label"]) == {"Toy sparse"} and set(t["phase"]) == {"train"}
    assert set(t["order"]) == {65} and set(t["headline"]) == {False}
    assert line(plot_performance_density(t).axes[1], "toy_sparse|").get_label() == "Toy sparse"


@pytest.mark.slow
def test_a_real_small_study_end_to_end(small_study):
    import subprocess

    from tests.conftest import REPO

    tmp_path, _ = small_study
    (study_dir,) = (tmp_path / "studies").glob("compare-*")
    out = subprocess.run([sys.executable, "-m", "analysis", str(study_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    t = pd.read_csv(study_dir / "analysis" / "points.csv")
    assert set(t["method"]) == {"dense", "imp_c", "pwmpr", "pwmp", "rg", "gg", "phew", "rigl"}
    assert (t["status"] == "finished").all()
    fig = plot_performance_density(load_table(study_dir))
    gids = {ln.get_gid() for ln in fig.axes[0].get_lines()}
    assert {"pwmpr|", "pwmp|", "rg|", "gg|", "dense"} <= gids
    assert (study_dir / "analysis" / "report.html").stat().st_size > 50_000
