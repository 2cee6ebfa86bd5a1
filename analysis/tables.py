"""Accuracy and cost per method at chosen densities and at each growth method's discovered
density, over seeds, as a DataFrame and as Markdown, CSV and LaTeX; and the paired comparison of
the headline method with every other method at the chosen densities over the seeds both ran.

A method's value at a target density d is its finished curve point nearest to d in log density,
taken only when that point lies within a factor ``tolerance`` of d (default 1.12: half of the
default growth step 1.25, since sqrt(1.25) = 1.118; growth snapshots and pruning levels, both
spaced by x1.25, then always have a point within reach, and nothing farther is passed off as d).
One point per seed; the statistics are over seeds: test accuracy's mean with its 95% bootstrap
interval (3 seeds or more; :mod:`analysis.statistics`), density's and cost's mean and standard
deviation (ddof=1, empty for one seed). Rows follow the records' method order; the dense
family's runs give the reference row, the growth family's the discovered rows, and each method
is named by its records' label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.aggregation import curve_points
from analysis.methods import headline_growth, info_of, method_info
from analysis.statistics import (BOOTSTRAP_METHOD, BOOTSTRAP_RESAMPLES, MIN_SEEDS_FOR_INTERVAL, PAIRED_TEST, mean_interval,
                                 paired_comparison)

DEFAULT_DENSITIES = (0.1, 0.2)
DEFAULT_TOLERANCE = 1.12
TABLE_COLUMNS = [
    "dataset", "model", "method", "label", "variant", "at", "seeds", "density_mean", "density_std",
    "test_accuracy_mean", "test_accuracy_std", "test_accuracy_ci_low", "test_accuracy_ci_high", "test_accuracy_min",
    "test_accuracy_max", "cost_epochs_mean", "cost_epochs_std",
]
PAIRED_COLUMNS = [
    "dataset", "model", "at", "headline", "headline_label", "headline_variant", "method", "label", "variant", "seeds",
    "headline_only_seeds", "method_only_seeds", "difference_mean", "difference_ci_low", "difference_ci_high",
    "difference_min", "difference_max", "p_value", "p_min", "test",
]
TABLE_NOTE = (
    f"Test accuracy: mean over seeds [95% {BOOTSTRAP_METHOD} bootstrap interval of the mean, {BOOTSTRAP_RESAMPLES} "
    f"resamples] from {MIN_SEEDS_FOR_INTERVAL} seeds on; with 2 seeds the mean and their range (two values are too few "
    "for an interval), with 1 the mean alone (n=1). Density and cost: mean ± std over seeds."
)
PAIRED_NOTE = (
    "Headline minus the other method, test accuracy in points, per seed both ran at that density (each one's point "
    "nearest to it within the tolerance); seeds only one of them has are left out and listed. Difference: mean "
    f"[95% {BOOTSTRAP_METHOD} bootstrap interval of the mean difference] from {MIN_SEEDS_FOR_INTERVAL} pairs on. "
    f"p: {PAIRED_TEST} of the mean difference, over all 2^n sign patterns; with n pairs it cannot fall below "
    "2/2^n (0.25 for 3 seeds, 0.125 for 4, 0.0625 for 5), so p < 0.05 needs 6 seeds or more."
)


def _stats(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def _row(key, at: str, picked: pd.DataFrame, label: str) -> dict:
    dataset, model, method, variant = key
    d_mean, d_std = _stats(picked["density"].tolist())
    _, a_std = _stats(picked["test_accuracy"].tolist())
    a_mean, a_low, a_high, _ = mean_interval(picked["test_accuracy"].tolist())
    c_mean, c_std = _stats(picked["cost_epochs"].tolist())
    return {
        "dataset": dataset, "model": model, "method": method, "label": label, "variant": variant, "at": at,
        "seeds": int(picked["seed"].nunique()), "density_mean": d_mean, "density_std": d_std,
        "test_accuracy_mean": a_mean, "test_accuracy_std": a_std, "test_accuracy_ci_low": a_low, "test_accuracy_ci_high": a_high,
        "test_accuracy_min": float(picked["test_accuracy"].min()), "test_accuracy_max": float(picked["test_accuracy"].max()),
        "cost_epochs_mean": c_mean, "cost_epochs_std": c_std,
    }


def at_label(target: float) -> str:
    return f"{100 * target:g}%"


def points_at(series: pd.DataFrame, target: float, tolerance: float) -> pd.DataFrame:
    """Per seed of one series: its point nearest to `target` in log density, if within a factor
    `tolerance` of it (seeds without such a point have no row)."""
    picked = []
    for _, per_seed in series.groupby("seed"):
        dist = (np.log(per_seed["density"]) - math.log(target)).abs()
        best = dist.idxmin()
        if dist[best] <= math.log(tolerance) + 1e-12:
            picked.append(per_seed.loc[best])
    return pd.DataFrame(picked, columns=series.columns)


def _check_tolerance(tolerance: float) -> None:
    if tolerance < 1:
        raise ValueError(f"tolerance is a density factor >= 1, got {tolerance}")


def _series(table: pd.DataFrame):
    """(method info, curve points grouped by (dataset, model, method, variant), the keys in the records' order)."""
    info = method_info(table)
    groups = curve_points(table).groupby(["dataset", "model", "method", "variant"], sort=False)
    keys = sorted(groups.groups, key=lambda k: (k[0], k[1], info_of(info, k[2]).sort_key(), k[3]))
    return info, groups, keys


def density_table(table: pd.DataFrame, densities: Sequence[float] = DEFAULT_DENSITIES,
                  tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """One row per (dataset, model, method, variant) and target: each target density, the
    growth methods' discovered density, and dense at its own density (the reference)."""
    _check_tolerance(tolerance)
    info, groups, keys = _series(table)
    rows = []
    for key in keys:
        g = groups.get_group(key)
        family, label = info_of(info, key[2]).family, info_of(info, key[2]).label
        if family == "dense":
            rows.append(_row(key, "reference (dense)", g, label))
            continue
        for target in densities:
            picked = points_at(g, target, tolerance)
            if not picked.empty:
                rows.append(_row(key, at_label(target), picked, label))
        disc = g[g["discovered"] & (g["phase"] == "extensive")]
        if family == "growth" and not disc.empty:
            rows.append(_row(key, "discovered", disc, label))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _seed_list(seeds) -> str:
    return ", ".join(str(int(s)) for s in sorted(seeds))


def paired_table(table: pd.DataFrame, densities: Sequence[float] = DEFAULT_DENSITIES,
                 tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """Per (dataset, model), headline series, target density and other series (every method but
    the dense reference): the headline's test accuracy minus the other's over the seeds both have
    a point for at that density (:func:`points_at`), with its interval and sign-flip p-value.
    The headline is what the records say (:func:`analysis.methods.headline_growth`); where they
    do not say (old records, every growth method counts), each pair of them is compared once."""
    _check_tolerance(tolerance)
    info, groups, keys = _series(table)
    heads = set(headline_growth(info))
    rows = []
    for dataset, model in dict.fromkeys(k[:2] for k in keys):
        here = [k for k in keys if k[:2] == (dataset, model) and info_of(info, k[2]).family != "dense"]
        head_keys = [k for k in here if k[2] in heads]
        for i, head in enumerate(head_keys):
            # each pair of headline methods once: with the later ones, not again with the earlier
            others = [k for k in here if k[2] != head[2] and not (k in head_keys and head_keys.index(k) < i)]
            for target in densities:
                mine = points_at(groups.get_group(head), target, tolerance)
                if mine.empty:
                    continue
                mine = dict(zip(mine["seed"].astype(int), mine["test_accuracy"].astype(float)))
                for other in others:
                    theirs = points_at(groups.get_group(other), target, tolerance)
                    if theirs.empty:
                        continue
                    theirs = dict(zip(theirs["seed"].astype(int), theirs["test_accuracy"].astype(float)))
                    shared = sorted(set(mine) & set(theirs))
                    diffs = np.array([mine[s] - theirs[s] for s in shared], dtype=float)
                    compared = paired_comparison([mine[s] for s in shared], [theirs[s] for s in shared])
                    rows.append({
                        "dataset": dataset, "model": model, "at": at_label(target),
                        "headline": head[2], "headline_label": info_of(info, head[2]).label, "headline_variant": head[3],
                        "method": other[2], "label": info_of(info, other[2]).label, "variant": other[3],
                        "seeds": compared["n"], "headline_only_seeds": _seed_list(set(mine) - set(theirs)),
                        "method_only_seeds": _seed_list(set(theirs) - set(mine)),
                        "difference_mean": compared["difference_mean"], "difference_ci_low": compared["difference_ci_low"],
                        "difference_ci_high": compared["difference_ci_high"],
                        "difference_min": float(diffs.min()) if diffs.size else math.nan,
                        "difference_max": float(diffs.max()) if diffs.size else math.nan,
                        "p_value": compared["p_value"], "p_min": compared["p_min"], "test": compared["test"],
                    })
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _num_text(value: float, scale: float, digits: int, signed: bool) -> str:
    return f"{scale * value:{'+' if signed else ''}.{digits}f}"


def mean_and_interval(mean: float, low: float, high: float, lowest: float, highest: float, n: int, scale: float = 100,
                      digits: int = 2, latex: bool = False, signed: bool = False) -> str:
    """A mean over seeds with what n seeds allow: its 95% interval [low, high] from 3 on, the
    range of the 2 values with 2 (marked as such, never passed off as an interval), n=1 alone."""
    if n == 0 or math.isnan(mean):
        return "-"
    text = _num_text(mean, scale, digits, signed)
    if n >= MIN_SEEDS_FOR_INTERVAL and not (math.isnan(low) or math.isnan(high)):
        return f"{text} [{_num_text(low, scale, digits, signed)}, {_num_text(high, scale, digits, signed)}]"
    if n == 2:
        dash = "--" if latex else "–"
        return f"{text} (range {_num_text(lowest, scale, digits, signed)}{dash}{_num_text(highest, scale, digits, signed)})"
    return f"{text} (n={n})"


def _pm(mean: float, std: float, scale: float, digits: int, latex: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{scale * mean:.{digits}f}"
    if not math.isnan(std):
        text += (r" $\pm$ " if latex else " ± ") + f"{scale * std:.{digits}f}"
    return text


def _name(label, method, variant) -> str:
    name = label if isinstance(label, str) and label else str(method)
    return name + (f" [{variant}]" if variant else "")


def display_rows(dt: pd.DataFrame, latex: bool = False) -> tuple[list[str], list[list[str]]]:
    multi = dt[["dataset", "model"]].drop_duplicates().shape[0] > 1
    header = (["dataset / model"] if multi else []) + ["method", "at", "seeds", "density (%)",
                                                         "test accuracy (%): mean [95% CI]", "cost (dense runs)"]
    body = []
    for r in dt.itertuples():
        cells = ([f"{r.dataset} / {r.model}"] if multi else []) + [
            _name(r.label, r.method, r.variant), r.at, str(r.seeds), _pm(r.density_mean, r.density_std, 100, 2, latex),
            mean_and_interval(r.test_accuracy_mean, r.test_accuracy_ci_low, r.test_accuracy_ci_high, r.test_accuracy_min,
                              r.test_accuracy_max, r.seeds, latex=latex),
            _pm(r.cost_epochs_mean, r.cost_epochs_std, 1, 2, latex),
        ]
        body.append(cells)
    return header, body


def paired_rows(pt: pd.DataFrame, latex: bool = False) -> tuple[list[str], list[list[str]]]:
    """The paired comparisons of :func:`paired_table` as display cells."""
    multi = pt[["dataset", "model"]].drop_duplicates().shape[0] > 1
    header = (["dataset / model"] if multi else []) + [
        "at", "headline", "against", "paired seeds", "difference (points): mean [95% CI]", "p (sign-flip)",
        "smallest possible p", "unpaired seeds"]
    body = []
    for r in pt.itertuples():
        head, other = _name(r.headline_label, r.headline, r.headline_variant), _name(r.label, r.method, r.variant)
        unpaired = "; ".join(f"{seeds} ({who} only)" for seeds, who in ((r.headline_only_seeds, head), (r.method_only_seeds, other))
                             if isinstance(seeds, str) and seeds)
        body.append(([f"{r.dataset} / {r.model}"] if multi else []) + [
            r.at, head, other, str(r.seeds),
            mean_and_interval(r.difference_mean, r.difference_ci_low, r.difference_ci_high, r.difference_min, r.difference_max,
                              r.seeds, latex=latex, signed=True),
            "-" if math.isnan(r.p_value) else f"{r.p_value:.3f}", "-" if math.isnan(r.p_min) else f"{r.p_min:.3g}",
            unpaired or "-",
        ])
    return header, body


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    return "\n".join(_markdown(header, body)) + "\n"


def to_markdown(dt: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """The density table; with `paired` (:func:`paired_table`), the paired comparisons below it."""
    text = _markdown_table(*display_rows(dt)) + "\n" + TABLE_NOTE + "\n"
    if paired is not None:
        text += "\n## Paired against the headline method\n\n"
        if paired.empty:
            text += "No point of a headline method lies at a chosen density where another method has one.\n"
        else:
            text += _markdown_table(*paired_rows(paired)) + "\n" + PAIRED_NOTE + "\n"
    return text


def _latex_escape(text: str) -> str:
    if "$" in text:  # already LaTeX (the ± cells)
        return text.replace("%", r"\%")
    # braces before the replacements that bring their own
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("{", r"\{"), ("}", r"\}"),
                 ("^", r"\^{}"), ("<", "$<$"), (">", "$>$")):
        text = text.replace(a, b)
    return text


def _latex_table(header: list[str], body: list[list[str]], columns: str, caption: str) -> list[str]:
    lines = ["\\begin{table}[t]", "\\centering", "\\begin{tabular}{" + columns + "}", "\\toprule",
             " & ".join(_latex_escape(h) for h in header) + " \\\\", "\\midrule"]
    lines += [" & ".join(_latex_escape(c) for c in cells) + " \\\\" for cells in body]
    lines += ["\\bottomrule", "\\end{tabular}"]
    if caption:
        lines.append("\\caption{" + _latex_escape(caption) + "}")
    return lines + ["\\end{table}"]


def to_latex(dt: pd.DataFrame, caption: str = "", paired: pd.DataFrame | None = None, paired_caption: str = "") -> str:
    """Booktabs tabulars (needs \\usepackage{booktabs}): the density table, and with `paired`
    the paired comparisons as a second table."""
    header, body = display_rows(dt, latex=True)
    lines = ["% needs \\usepackage{booktabs}", *_latex_table(header, body, "l" * (len(header) - 4) + "rrrr", caption)]
    if paired is not None and not paired.empty:
        header, body = paired_rows(paired, latex=True)
        lines += ["", *_latex_table(header, body, "l" * (len(header) - 5) + "rrrrl", paired_caption or PAIRED_NOTE)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- discovered against oracle density


def _fmt(value, fmt: str, scale: float = 1.0) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    return format(scale * v, fmt) if math.isfinite(v) else "-"


def discovery_rows(agg: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The seeds' aggregate of :func:`analysis.discovery.aggregate_discovery` as display cells."""
    multi = agg[["dataset", "model"]].drop_duplicates().shape[0] > 1
    header = (["dataset / model"] if multi else []) + [
        "method", "seeds", "discovered density (%)", "oracle density (%)", "error (growth steps)",
        "val. shortfall (points)", "test shortfall (points)", "discovered max/min"]
    body = []
    for r in agg.itertuples():
        name = (r.label if isinstance(r.label, str) and r.label else str(r.method)) + (f" [{r.variant}]" if r.variant else "")
        span = lambda m, lo, hi, fmt, s=1.0: _fmt(m, fmt, s) + ("" if r.seeds < 2 else f" [{_fmt(lo, fmt, s)}, {_fmt(hi, fmt, s)}]")
        body.append(([f"{r.dataset} / {r.model}"] if multi else []) + [
            name, str(r.seeds),
            span(r.discovered_density_mean, r.discovered_density_min, r.discovered_density_max, ".2f", 100),
            span(r.oracle_density_mean, r.oracle_density_min, r.oracle_density_max, ".2f", 100),
            span(r.error_steps_mean, r.error_steps_min, r.error_steps_max, "+.2f"),
            span(r.val_shortfall_mean, r.val_shortfall_min, r.val_shortfall_max, ".2f", 100),
            _fmt(r.test_shortfall_mean, ".2f", 100), _fmt(r.discovered_max_over_min, ".3f"),
        ])
    return header, body


def discovery_run_rows(per_run: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Each run of :func:`analysis.discovery.discovery_table` as display cells."""
    header = ["run", "method", "seed", "tol", "discovered (%)", "oracle (%)", "error (steps)", "plateau val. (%)",
              "val. shortfall (points)", "test at discovered (%)", "test at oracle (%)", "stop reason"]
    body = []
    for r in per_run.itertuples():
        name = (r.label if isinstance(r.label, str) and r.label else str(r.method)) + (f" [{r.variant}]" if r.variant else "")
        body.append([str(r.run), name, "-" if pd.isna(r.seed) else str(int(r.seed)), _fmt(r.tol, "g"),
                     _fmt(r.discovered_density, ".2f", 100), _fmt(r.oracle_density, ".2f", 100), _fmt(r.error_steps, "+.2f"),
                     _fmt(r.plateau_val_accuracy, ".2f", 100), _fmt(r.val_shortfall, ".2f", 100),
                     _fmt(r.discovered_test_accuracy, ".2f", 100), _fmt(r.oracle_test_accuracy, ".2f", 100), str(r.stop_reason)])
    return header, body


def _markdown(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]


DISCOVERY_NOTE = (
    "Oracle density: the smallest snapshot density whose full-training validation accuracy, fitted non-decreasing "
    "in density (isotonic), is within tol (the run's growth.stop.tol) of the fitted curve's maximum (the plateau). "
    "Error: log(discovered / oracle) / log(growth ratio), in growth steps (negative: stopped too early). Shortfall: "
    "plateau minus the fitted accuracy at the discovered density. Test accuracy is shown beside, never used to decide. "
    "Seeds: mean (densities: geometric) [min, max]; max/min: the largest over the smallest discovered density."
)


def discovery_markdown(per_run: pd.DataFrame, agg: pd.DataFrame) -> str:
    lines = ["# Discovered against oracle density", "", DISCOVERY_NOTE, "", "## Over seeds", ""]
    lines += _markdown(*discovery_rows(agg))
    lines += ["", "## Each run", ""] + _markdown(*discovery_run_rows(per_run))
    return "\n".join(lines) + "\n"
