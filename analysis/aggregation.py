"""From the tidy table to what figures and tables show: one dataset/model's rows, the finished
curve points, series in their order, seeds' statistics per density (mean, range, 95% bootstrap
interval) and the band drawn from them, the dense reference and the discovered points. Which
methods are which comes from their records (:mod:`analysis.methods`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from analysis.methods import CURVE_PHASES, MethodInfo, info_of, method_info
from analysis.statistics import MIN_SEEDS_FOR_INTERVAL, bootstrap_interval

# Points of different seeds within this density factor are one point of the mean curve.
SAME_DENSITY = 1.02


def select(table: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> tuple[pd.DataFrame, str]:
    """Rows of one dataset and model (the only one when there is a single pair)."""
    pairs = table.dropna(subset=["dataset", "model"])[["dataset", "model"]].drop_duplicates()
    if dataset is None and model is None:
        if len(pairs) > 1:
            raise ValueError(f"the table holds several dataset/model pairs {pairs.values.tolist()}: choose one")
        if len(pairs) == 0:
            return table.iloc[0:0], "no runs"
        dataset, model = pairs.iloc[0]
    sel = table[(table["dataset"] == dataset) & (table["model"] == model)]
    return sel, f"{dataset} / {model}"


def curve_points(table: pd.DataFrame) -> pd.DataFrame:
    """Finished runs' curve points (extensive, level, train)."""
    return table[(table["status"] == "finished") & table["phase"].isin(CURVE_PHASES) & table["test_accuracy"].notna()]


def of_methods(points: pd.DataFrame, methods: Iterable[str]) -> pd.DataFrame:
    return points[points["method"].isin(list(methods))]


def series_keys(points: pd.DataFrame, info: Mapping[str, MethodInfo], methods: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(method, variant) pairs of the given methods (all when None), in the records' order."""
    wanted = None if methods is None else set(methods)
    keys = points[["method", "variant"]].drop_duplicates()
    keys = [tuple(k) for k in keys.values.tolist() if wanted is None or k[0] in wanted]
    return sorted(keys, key=lambda k: (info_of(info, k[0]).sort_key(), k[1]))


def density_groups(xs: np.ndarray, log_x: bool = True) -> list[int]:
    """Group ids for sorted x values: a new group where x grows by more than SAME_DENSITY."""
    groups, current = [], 0
    for i in range(len(xs)):
        if i and (xs[i] > xs[i - 1] * SAME_DENSITY if log_x else xs[i] - xs[i - 1] > 1e-9):
            current += 1
        groups.append(current)
    return groups


def aggregate(points: pd.DataFrame, value: str, x: str = "density", log_x: bool = True) -> pd.DataFrame:
    """Mean, min, max, count and the 95% bootstrap interval of the mean (``ci_low``, ``ci_high``:
    NaN below 3 seeds, see :mod:`analysis.statistics`) of `value` over seeds, per x (x values
    within a factor SAME_DENSITY are one point, their x the mean)."""
    pts = points[[x, value]].dropna().sort_values(x)
    if pts.empty:
        return pd.DataFrame(columns=[x, "mean", "min", "max", "n", "ci_low", "ci_high"])
    pts = pts.assign(_g=density_groups(pts[x].to_numpy(float), log_x))
    agg = pts.groupby("_g").agg(x=(x, "mean"), mean=(value, "mean"), min=(value, "min"), max=(value, "max"), n=(value, "size"))
    intervals = [bootstrap_interval(g[value].to_numpy(float)) for _, g in pts.groupby("_g")]
    agg["ci_low"], agg["ci_high"] = [lo for lo, _ in intervals], [hi for _, hi in intervals]
    return agg.rename(columns={"x": x}).reset_index(drop=True)


def band(agg: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The band drawn around a mean curve of :func:`aggregate`, point by point: the 95% bootstrap
    interval where a point has 3 seeds or more, the min-max range where it has 2 (too few for an
    interval), nothing (the mean itself) where it has 1."""
    interval = agg["n"].to_numpy() >= MIN_SEEDS_FOR_INTERVAL
    low = np.where(interval, agg["ci_low"].to_numpy(float), agg["min"].to_numpy(float))
    high = np.where(interval, agg["ci_high"].to_numpy(float), agg["max"].to_numpy(float))
    return low, high


def band_note(seed_counts: Iterable[int]) -> str:
    """What the bands of curves whose points have these seed counts show, in words ('' when none
    has a band: one seed everywhere)."""
    counts = set(int(n) for n in seed_counts)
    interval = any(n >= MIN_SEEDS_FOR_INTERVAL for n in counts)
    ranged = 2 in counts
    if interval and ranged:
        return "band: 95% bootstrap CI of the mean (min-max at points with only 2 seeds)"
    if interval:
        return "band: 95% bootstrap CI of the mean"
    if ranged:
        return "band: min-max of 2 seeds (too few for an interval)"
    return ""


def dense_points(sel: pd.DataFrame, info: Mapping[str, MethodInfo] | None = None) -> pd.DataFrame:
    """Curve points of the dense family's finished runs."""
    info = method_info(sel) if info is None else info
    pts = curve_points(sel)
    return pts[pts["method"].map(lambda m: info_of(info, m).family == "dense")]


def dense_reference(sel: pd.DataFrame, info: Mapping[str, MethodInfo] | None = None) -> float | None:
    """Mean test accuracy of the finished dense runs (else of other methods' points at density 1)."""
    dense = dense_points(sel, info)
    if dense.empty:
        pts = curve_points(sel)
        dense = pts[np.isclose(pts["density"], 1.0)]
    return float(dense["test_accuracy"].mean()) if not dense.empty else None


def discovered_points(sel: pd.DataFrame) -> pd.DataFrame:
    """Per growth series: the discovered density over seeds (geometric mean, min, max: densities
    live on a log scale), test accuracy and cost there (mean; cost also min and max), and whether
    the stopping rule chose it in every seed (not a density or round cap)."""
    pts = curve_points(sel)
    disc = pts[pts["discovered"] & (pts["phase"] == "extensive")]
    rows = []
    for (method, variant), g in disc.groupby(["method", "variant"], sort=False):
        rows.append(
            {
                "method": method, "variant": variant, "density": float(np.exp(np.log(g["density"]).mean())),
                "density_min": g["density"].min(), "density_max": g["density"].max(),
                "test_accuracy": g["test_accuracy"].mean(), "cost_epochs": g["cost_epochs"].mean(),
                "cost_epochs_min": g["cost_epochs"].min(), "cost_epochs_max": g["cost_epochs"].max(), "n": len(g),
                # the rule fired ("<rule> fit: ..."), rather than a cap being reached
                "by_rule": bool((~g["stop_reason"].str.startswith("reached ")).all()),
            }
        )
    return pd.DataFrame(rows, columns=["method", "variant", "density", "density_min", "density_max", "test_accuracy",
                                       "cost_epochs", "cost_epochs_min", "cost_epochs_max", "n", "by_rule"])


def n_seeds(sel: pd.DataFrame) -> int:
    pts = curve_points(sel)
    return int(pts.groupby("method")["seed"].nunique().max()) if not pts.empty else 0
