"""Accuracy and cost per method at chosen densities and at each growth method's discovered
density: seeds' mean and standard deviation, as a DataFrame and as Markdown, CSV and LaTeX.

A method's value at a target density d is its finished curve point nearest to d in log density,
taken only when that point lies within a factor ``tolerance`` of d (default 1.12: half of the
default growth step 1.25, since sqrt(1.25) = 1.118; growth snapshots and pruning levels, both
spaced by x1.25, then always have a point within reach, and nothing farther is passed off as d).
One point per seed; the statistics are over seeds (std with ddof=1, empty for one seed).
Rows follow the records' method order; the dense family's runs give the reference row, the growth
family's the discovered rows, and each method is named by its records' label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.aggregation import curve_points
from analysis.methods import info_of, method_info

DEFAULT_DENSITIES = (0.1, 0.2)
DEFAULT_TOLERANCE = 1.12
TABLE_COLUMNS = [
    "dataset", "model", "method", "label", "variant", "at", "seeds", "density_mean", "density_std",
    "test_accuracy_mean", "test_accuracy_std", "cost_epochs_mean", "cost_epochs_std",
]


def _stats(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def _row(key, at: str, picked: pd.DataFrame, label: str) -> dict:
    dataset, model, method, variant = key
    d_mean, d_std = _stats(picked["density"].tolist())
    a_mean, a_std = _stats(picked["test_accuracy"].tolist())
    c_mean, c_std = _stats(picked["cost_epochs"].tolist())
    return {
        "dataset": dataset, "model": model, "method": method, "label": label, "variant": variant, "at": at,
        "seeds": int(picked["seed"].nunique()), "density_mean": d_mean, "density_std": d_std,
        "test_accuracy_mean": a_mean, "test_accuracy_std": a_std, "cost_epochs_mean": c_mean, "cost_epochs_std": c_std,
    }


def density_table(table: pd.DataFrame, densities: Sequence[float] = DEFAULT_DENSITIES,
                  tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """One row per (dataset, model, method, variant) and target: each target density, the
    growth methods' discovered density, and dense at its own density (the reference)."""
    if tolerance < 1:
        raise ValueError(f"tolerance is a density factor >= 1, got {tolerance}")
    info = method_info(table)
    pts = curve_points(table)
    rows = []
    groups = pts.groupby(["dataset", "model", "method", "variant"], sort=False)
    keys = sorted(groups.groups, key=lambda k: (k[0], k[1], info_of(info, k[2]).sort_key(), k[3]))
    for key in keys:
        g = groups.get_group(key)
        family, label = info_of(info, key[2]).family, info_of(info, key[2]).label
        if family == "dense":
            rows.append(_row(key, "reference (dense)", g, label))
            continue
        for target in densities:
            picked = []
            for _, per_seed in g.groupby("seed"):
                dist = (np.log(per_seed["density"]) - math.log(target)).abs()
                best = dist.idxmin()
                if dist[best] <= math.log(tolerance) + 1e-12:
                    picked.append(per_seed.loc[best])
            if picked:
                rows.append(_row(key, f"{100 * target:g}%", pd.DataFrame(picked), label))
        disc = g[g["discovered"] & (g["phase"] == "extensive")]
        if family == "growth" and not disc.empty:
            rows.append(_row(key, "discovered", disc, label))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _pm(mean: float, std: float, scale: float, digits: int, latex: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{scale * mean:.{digits}f}"
    if not math.isnan(std):
        text += (r" $\pm$ " if latex else " ± ") + f"{scale * std:.{digits}f}"
    return text


def display_rows(dt: pd.DataFrame, latex: bool = False) -> tuple[list[str], list[list[str]]]:
    multi = dt[["dataset", "model"]].drop_duplicates().shape[0] > 1
    header = (["dataset / model"] if multi else []) + ["method", "at", "seeds", "density (%)", "test accuracy (%)",
                                                         "cost (dense runs)"]
    body = []
    for r in dt.itertuples():
        name = r.label if isinstance(r.label, str) and r.label else str(r.method)
        label = name + (f" [{r.variant}]" if r.variant else "")
        cells = ([f"{r.dataset} / {r.model}"] if multi else []) + [
            label, r.at, str(r.seeds), _pm(r.density_mean, r.density_std, 100, 2, latex),
            _pm(r.test_accuracy_mean, r.test_accuracy_std, 100, 2, latex), _pm(r.cost_epochs_mean, r.cost_epochs_std, 1, 2, latex),
        ]
        body.append(cells)
    return header, body


def to_markdown(dt: pd.DataFrame) -> str:
    header, body = display_rows(dt)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    if "$" in text:  # already LaTeX (the ± cells)
        return text.replace("%", r"\%")
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text


def to_latex(dt: pd.DataFrame, caption: str = "") -> str:
    """A booktabs tabular (needs \\usepackage{booktabs})."""
    header, body = display_rows(dt, latex=True)
    lines = [
        "% needs \\usepackage{booktabs}",
        "\\begin{table}[t]", "\\centering",
        "\\begin{tabular}{" + "l" * (len(header) - 4) + "rrrr" + "}", "\\toprule",
        " & ".join(_latex_escape(h) for h in header) + " \\\\", "\\midrule",
    ]
    lines += [" & ".join(_latex_escape(c) for c in cells) + " \\\\" for cells in body]
    lines += ["\\bottomrule", "\\end{tabular}"]
    if caption:
        lines.append("\\caption{" + _latex_escape(caption) + "}")
    lines.append("\\end{table}")
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
