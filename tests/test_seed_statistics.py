"""Statistics over seeds: the 95% bootstrap interval of the mean (tables, figure bands) and the
paired sign-flip comparison of the headline method with the others, on hand-written records
whose per-seed accuracies are known."""

import inspect
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import load_table, write_report
from analysis.aggregation import aggregate, band_note, curve_points
from analysis.figures import plot_cost_density, plot_performance_density
from analysis.statistics import mean_interval, paired_comparison, sign_flip_p, smallest_sign_flip_p
from analysis.tables import density_table, paired_table, to_markdown
from growth import records

# Names that say nothing: which method is the headline comes from the records only.
META = {
    "alpha": {"family": "growth", "label": "Alpha", "short_label": "Alpha", "color": "tab:red", "headline": True, "order": 10},
    "gamma": {"family": "growth", "label": "Gamma", "short_label": "Gamma", "color": "tab:blue", "headline": False, "order": 20},
    "beta": {"family": "fixed_density", "label": "Beta", "short_label": "Beta", "color": "tab:green", "headline": False, "order": 30},
    "delta": {"family": "fixed_density", "label": "Delta", "short_label": "Delta", "color": "tab:olive", "headline": False,
              "order": 40},
    "dense": {"family": "dense", "label": "dense", "short_label": "dense", "color": "black", "headline": False, "order": 90},
}
# Per method and density: one (test accuracy, cost) per seed, seed = position.
ALPHA = {0.1: [(0.80, 1.10), (0.84, 1.12), (0.83, 1.15), (0.86, 1.11)], 0.2: [(0.90, 1.20), (0.91, 1.24), (0.95, 1.22), (0.97, 1.21)]}
GAMMA = {0.1: [(0.78, 1.50), (0.80, 1.50), (0.82, 1.50)], 0.2: [(0.91, 1.60), (0.89, 1.60), (0.93, 1.60)]}
BETA = {0.1: [(0.70, 1.30), (0.75, 1.34)], 0.2: [(0.80, 1.31), (0.85, 1.33)]}  # no seed 2 (nor 3)
DELTA = {0.1: [(0.60, 0.90)]}  # one seed
DENSE = {1.0: [(0.98, 1.0), (0.97, 1.0), (0.99, 1.0)]}


def accuracies(per_density, d):
    return [acc for acc, _ in per_density[d]]


def scipy_interval(values):
    """scipy.stats.bootstrap called directly: percentile method, resamples drawn from default_rng(0)."""
    seed = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    res = stats.bootstrap((np.asarray(values, float),), np.mean, confidence_level=0.95, method="percentile",
                          n_resamples=9999, **{seed: np.random.default_rng(0)})
    return res.confidence_interval.low, res.confidence_interval.high


def write_method(root: Path, method: str, per_density):
    meta = META[method]
    seeds = {seed for points in per_density.values() for seed in range(len(points))}
    for seed in sorted(seeds):
        curve = []
        for i, (d, points) in enumerate(sorted(per_density.items())):
            if seed < len(points):
                acc, cost = points[seed]
                point = {"growth": f"extensive:{i}", "dense": "train"}.get(meta["family"], "train")
                curve.append({"point": point, "round": i, "density": d, "val_accuracy": acc, "test_accuracy": acc,
                              "cost_epochs": cost, "family": meta["family"], "phase": point.split(":")[0], "label": meta["label"]})
        summary = {"method": method, "dataset": "digits", "model": "mlp", "seed": seed, "status": "finished", **meta}
        if meta["family"] == "growth":
            summary.update(discovered_density=0.2, stop_reason="logistic fit: plateau observed")
        run_dir = root / f"{method}-s{seed}"
        run_dir.mkdir(parents=True)
        records.atomic_write_csv(run_dir / "curve.csv", curve)
        records.atomic_write_json(run_dir / "summary.json", summary)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    for method, per_density in (("alpha", ALPHA), ("gamma", GAMMA), ("beta", BETA), ("delta", DELTA), ("dense", DENSE)):
        write_method(root, method, per_density)
    return load_table(root)


def row(frame, **where):
    sel = frame
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, sel
    return sel.iloc[0]


# ------------------------------------------------------------------ the interval


def test_the_interval_is_scipys_percentile_bootstrap_of_the_mean_and_holds_the_mean():
    values = [0.81, 0.84, 0.79, 0.88, 0.83]
    mean, low, high, n = mean_interval(values)
    assert n == 5 and mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(scipy_interval(values), abs=1e-12)
    assert low < mean < high
    assert min(values) < low and high < max(values)  # narrower than the range: not min-max under another name
    assert mean_interval(values)[1:3] == (low, high)  # a fixed random state: the same values, the same interval


def test_one_or_two_seeds_give_no_interval_and_equal_values_a_point():
    for values in ([0.8], [0.8, 0.9]):
        mean, low, high, n = mean_interval(values)
        assert n == len(values) and mean == pytest.approx(np.mean(values)) and math.isnan(low) and math.isnan(high)
    assert mean_interval([0.7, 0.7, 0.7])[1:3] == pytest.approx((0.7, 0.7))
    assert math.isnan(mean_interval([])[0])


def test_the_density_table_gives_each_methods_interval_and_n(table):
    dt = density_table(table, densities=(0.1, 0.2))
    alpha = row(dt, method="alpha", at="10%")
    assert alpha["seeds"] == 4 and alpha["test_accuracy_mean"] == pytest.approx(np.mean(accuracies(ALPHA, 0.1)))
    assert (alpha["test_accuracy_ci_low"], alpha["test_accuracy_ci_high"]) == pytest.approx(scipy_interval(accuracies(ALPHA, 0.1)))
    assert alpha["test_accuracy_ci_low"] <= alpha["test_accuracy_mean"] <= alpha["test_accuracy_ci_high"]
    gamma = row(dt, method="gamma", at="20%")
    assert gamma["seeds"] == 3 and (gamma["test_accuracy_ci_low"], gamma["test_accuracy_ci_high"]) == pytest.approx(
        scipy_interval(accuracies(GAMMA, 0.2)))
    beta = row(dt, method="beta", at="10%")  # two seeds: no interval, the range kept
    assert beta["seeds"] == 2 and math.isnan(beta["test_accuracy_ci_low"]) and math.isnan(beta["test_accuracy_ci_high"])
    assert (beta["test_accuracy_min"], beta["test_accuracy_max"]) == pytest.approx((0.70, 0.75))
    delta = row(dt, method="delta", at="10%")  # one seed: the mean alone
    assert delta["seeds"] == 1 and delta["test_accuracy_mean"] == pytest.approx(0.60) and math.isnan(delta["test_accuracy_ci_low"])
    md = to_markdown(dt)
    lo, hi = scipy_interval(accuracies(ALPHA, 0.1))
    assert f"| Alpha | 10% | 4 | 10.00 ± 0.00 | 83.25 [{100 * lo:.2f}, {100 * hi:.2f}] |" in md
    assert "| Beta | 10% | 2 | 10.00 ± 0.00 | 72.50 (range 70.00–75.00) |" in md
    assert "| Delta | 10% | 1 | 10.00 | 60.00 (n=1) |" in md
    assert "test accuracy (%): mean [95% CI]" in md and "[" not in md.split("| Delta |")[1].split("\n")[0]


def test_aggregate_adds_the_interval_and_keeps_min_and_max(table):
    pts = curve_points(table)
    agg = aggregate(pts[pts["method"] == "alpha"], "test_accuracy")
    assert list(agg.columns) == ["density", "mean", "min", "max", "n", "ci_low", "ci_high"]
    first = agg.iloc[0]
    assert first["n"] == 4 and (first["min"], first["max"]) == pytest.approx((0.80, 0.86))
    assert (first["ci_low"], first["ci_high"]) == pytest.approx(scipy_interval(accuracies(ALPHA, 0.1)))
    single = aggregate(pts[pts["method"] == "delta"], "test_accuracy")
    assert single["n"].tolist() == [1] and single["ci_low"].isna().all()
    assert aggregate(pts.iloc[0:0], "test_accuracy").columns.tolist()[-2:] == ["ci_low", "ci_high"]


# ------------------------------------------------------------------ the paired test


def test_the_sign_flip_test_by_hand():
    # every difference positive over 3 seeds: only all-plus and all-minus reach |mean|: 2 of 8
    assert sign_flip_p([0.02, 0.04, 0.01]) == pytest.approx(0.25)
    # (-1, +2, +2): sign patterns with |sum| >= 3 are +-(-1+2+2) and +-(1+2+2): 4 of 8
    assert sign_flip_p([-0.01, 0.02, 0.02]) == pytest.approx(0.5)
    assert [smallest_sign_flip_p(n) for n in (1, 2, 3, 4, 5, 6)] == pytest.approx([1, 0.5, 0.25, 0.125, 0.0625, 0.03125])
    assert sign_flip_p([0.01] * 6) == pytest.approx(2 / 64) and 2 / 64 < 0.05  # six seeds are the fewest that can reach 0.05
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    res = paired_comparison([0.9, 0.8, 0.85], [0.88, 0.76, 0.84])
    assert res["n"] == 3 and res["difference_mean"] == pytest.approx((0.02 + 0.04 + 0.01) / 3) and res["p_value"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        paired_comparison([0.9, 0.8], [0.9])


def test_the_paired_table_pairs_the_headline_by_seed_at_each_density(table):
    pt = paired_table(table, densities=(0.1, 0.2))
    assert set(pt["headline"]) == {"alpha"}  # the records' headline, not a name the code knows
    assert "dense" not in set(pt["method"])
    g10 = row(pt, method="gamma", at="10%")
    # alpha's seed 3 has no gamma partner: left out, the three shared seeds all favour alpha
    diffs = [a - b for a, b in zip(accuracies(ALPHA, 0.1)[:3], accuracies(GAMMA, 0.1))]
    assert g10["seeds"] == 3 and g10["headline_only_seeds"] == "3" and g10["method_only_seeds"] == ""
    assert g10["difference_mean"] == pytest.approx(np.mean(diffs)) == pytest.approx(0.07 / 3)
    assert g10["p_value"] == pytest.approx(0.25) and g10["p_min"] == pytest.approx(0.25)
    assert (g10["difference_ci_low"], g10["difference_ci_high"]) == pytest.approx(scipy_interval(diffs))
    g20 = row(pt, method="gamma", at="20%")
    assert g20["difference_mean"] == pytest.approx(0.01) and g20["p_value"] == pytest.approx(0.5)
    beta = row(pt, method="beta", at="10%")  # beta lacks seeds 2 and 3
    assert beta["seeds"] == 2 and beta["headline_only_seeds"] == "2, 3"
    assert beta["difference_mean"] == pytest.approx((0.10 + 0.09) / 2) and beta["p_value"] == pytest.approx(0.5)
    assert math.isnan(beta["difference_ci_low"])
    delta = row(pt, method="delta", at="10%")
    assert delta["seeds"] == 1 and delta["difference_mean"] == pytest.approx(0.20) and delta["p_value"] == pytest.approx(1.0)
    assert pt[(pt["method"] == "delta") & (pt["at"] == "20%")].empty  # delta has no point near 20%
    md = to_markdown(density_table(table, densities=(0.1, 0.2)), pt)
    lo, hi = scipy_interval(diffs)
    assert f"| 10% | Alpha | Gamma | 3 | +2.33 [{100 * lo:+.2f}, {100 * hi:+.2f}] | 0.250 | 0.25 | 3 (Alpha only) |" in md
    assert "| 10% | Alpha | Beta | 2 | +9.50 (range +9.00–+10.00) | 0.500 | 0.5 | 2, 3 (Alpha only) |" in md
    assert "2/2^n" in md and "sign-flip" in md


def test_seeds_only_the_other_method_has_are_left_out_too(tmp_path):
    write_method(tmp_path, "alpha", {0.1: ALPHA[0.1][:2]})  # seeds 0, 1
    write_method(tmp_path, "gamma", GAMMA)  # seeds 0, 1, 2
    pt = paired_table(load_table(tmp_path), densities=(0.1,))
    g = row(pt, method="gamma")
    assert g["seeds"] == 2 and g["method_only_seeds"] == "2" and g["headline_only_seeds"] == ""
    assert g["difference_mean"] == pytest.approx(((0.80 - 0.78) + (0.84 - 0.80)) / 2)


def test_the_files_and_report_carry_the_intervals_and_the_paired_test(table, tmp_path):
    out = tmp_path / "report"
    names = {f.name for f in write_report(table, out, densities=(0.1, 0.2))}
    assert {"density_table.csv", "paired_table.csv", "density_table.md", "density_table.tex", "report.html"} <= names
    dt = pd.read_csv(out / "density_table.csv")
    assert {"test_accuracy_ci_low", "test_accuracy_ci_high", "test_accuracy_min", "test_accuracy_max", "seeds"} <= set(dt.columns)
    alpha = row(dt, method="alpha", at="10%")
    assert (alpha["test_accuracy_ci_low"], alpha["test_accuracy_ci_high"]) == pytest.approx(scipy_interval(accuracies(ALPHA, 0.1)))
    pt = pd.read_csv(out / "paired_table.csv")
    assert {"seeds", "difference_mean", "difference_ci_low", "difference_ci_high", "p_value", "p_min", "test"} <= set(pt.columns)
    assert row(pt, method="gamma", at="10%")["p_value"] == pytest.approx(0.25)
    tex = (out / "density_table.tex").read_text()
    assert tex.count("\\begin{tabular}") == 2 and "mean [95\\% CI]" in tex and "2/2\\^{}n" in tex
    lo, hi = scipy_interval(accuracies(ALPHA, 0.1))
    html = (out / "report.html").read_text()
    assert "test accuracy (%): mean [95% CI]" in html and f"83.25 [{100 * lo:.2f}, {100 * hi:.2f}]" in html
    assert "Paired against the headline method" in html and "difference (points): mean [95% CI]" in html
    assert "3 (Alpha only)" in html and "0.250" in html
    assert "## Paired against the headline method" in (out / "density_table.md").read_text()


# ------------------------------------------------------------------ the figures' bands


def band_at(ax, gid, xs):
    """The band's low and high at each x (flat: low, high, low, high, ...), read off the filled
    polygon's vertices."""
    (poly,) = [c for c in ax.collections if c.get_gid() == gid]
    verts = poly.get_paths()[0].vertices
    out = []
    for x in xs:
        ys = verts[np.isclose(verts[:, 0], x), 1]
        out += [ys.min(), ys.max()]
    return out


def test_the_performance_band_is_the_interval_from_three_seeds_and_the_range_below(table):
    fig = plot_performance_density(table)
    a, b = fig.axes[:2]
    expected = [100 * v for d in (0.1, 0.2) for v in scipy_interval(accuracies(ALPHA, d))]
    assert band_at(a, "band|alpha|", [0.1, 0.2]) == pytest.approx(expected)
    assert band_at(a, "band|alpha|", [0.1])[0] > 80.0  # inside the seeds' range, not min-max
    assert band_at(a, "band|gamma|", [0.2]) == pytest.approx([100 * v for v in scipy_interval(accuracies(GAMMA, 0.2))])
    assert band_at(b, "band|beta|", [0.1, 0.2]) == pytest.approx([70.0, 75.0, 80.0, 85.0])  # two seeds: min-max
    assert not [c for c in b.collections if c.get_gid() == "band|delta|"]  # one seed: no band
    assert "band: 95% bootstrap CI of the mean (min-max at points with only 2 seeds)" in fig._suptitle.get_text()


def test_the_cost_band_is_the_interval_too(table):
    (ax,) = plot_cost_density(table).axes
    costs = [cost for _, cost in ALPHA[0.1]]
    assert band_at(ax, "band|alpha|", [0.1]) == pytest.approx(list(scipy_interval(costs)))
    assert band_at(ax, "band|alpha|", [0.1]) != pytest.approx([min(costs), max(costs)])
    assert "95% bootstrap CI" in ax.get_title()


def test_band_notes_say_what_the_band_is():
    assert band_note([1, 1]) == ""
    assert band_note([2, 1]) == "band: min-max of 2 seeds (too few for an interval)"
    assert band_note([3, 5]) == "band: 95% bootstrap CI of the mean"


# ------------------------------------------------------------------ the study's own text table


def test_the_study_table_keeps_seeds_apart(tmp_path):
    """A study runs three seeds by default: its printed table has a row per method and seed, and
    compares methods with the reference seed by seed, never one seed's point with another's."""
    from analysis.study_table import study_table

    jobs = []
    for label, method, seed, curve, disc in (
        ("alpha/s0", "alpha", 0, [(0.01, 0.80), (0.0125, 0.85)], 0.0125),
        ("alpha/s1", "alpha", 1, [(0.01, 0.81), (0.0125, 0.86)], 0.0125),
        ("beta/s0/r001", "beta", 0, [(0.0125, 0.70)], None),
        ("beta/s1/r001", "beta", 1, [(0.0125, 0.71)], None),
    ):
        run_dir = tmp_path / label.replace("/", "-")
        run_dir.mkdir()
        records.atomic_write_csv(run_dir / "curve.csv", [{"density": d, "test_accuracy": a, "cost_epochs": 1.0} for d, a in curve])
        records.atomic_write_json(run_dir / "summary.json", {"method": method, "seed": seed, "status": "finished",
                                                             "discovered_density": disc})
        jobs.append({"label": label, "status": "finished", "error": None, "run_dir": str(run_dir)})
    text = study_table(jobs, "alpha")
    assert "| alpha (seed 0) | 2 |" in text and "| alpha (seed 1) | 2 |" in text and "| beta (seed 1) | 1 |" in text
    seed1 = text.split("densities of alpha, seed 1")[1]
    assert "| 1.25% | 86.00% (1.00) | 71.00% (1.00) |" in seed1 and "70.00%" not in seed1
    one = study_table(jobs[::2], "alpha")  # one seed: the method names alone, as before
    assert "| alpha | 2 |" in one and "seed" not in one.split("\n\n")[0]
