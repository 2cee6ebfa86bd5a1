"""How good is a discovered density? The oracle density of a growth run with its full curve, and
the discovery error: how far from it the stopping rule stopped, and what that cost in accuracy.

A growth run with its full curve (``extensive.which=all growth.stop.keep_growing=true``) has in
curve.csv one row per snapshot density with its validation and test accuracy after full
training. Its **oracle density** is the smallest snapshot density whose full-training
*validation* accuracy is within ``tol`` of the curve's plateau, where the curve is first made
robust to a single noisy point by an isotonic fit (pool adjacent violators: the closest
non-decreasing curve over density, least squares) and the plateau is the fitted curve's maximum.
``tol`` is the run's own ``growth.stop.tol`` unless given. Test accuracy is reported beside it and
never used to decide.

The **discovery error** of the run's discovered density d against the oracle o:

- ``error_steps`` = log(d / o) / log(growth.growth_ratio): growth steps past the oracle
  (negative: stopped too early);
- ``val_shortfall`` = plateau - the fitted validation accuracy at d (0 when d is on the plateau);
- ``test_shortfall``: the same with the test accuracy (its own isotonic fit), for information.

A density that is not a curve point (it always is for a run with every snapshot trained) takes
the fitted value interpolated linearly in log density, clamped to the curve's ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import _read_csv, _read_json, load_table, read_config
from analysis.methods import info_of, method_info, phase_of, record_meta

__all__ = [
    "MIN_CURVE_POINTS", "RUN_COLUMNS", "AGGREGATE_COLUMNS", "FullCurve", "isotonic", "full_curve", "discovery_error",
    "run_records", "run_discovery", "discovery_table", "aggregate_discovery", "growth_settings",
]

MIN_CURVE_POINTS = 3  # fewer full-training points are not a curve with a plateau
_EPS = 1e-12  # "within tol" forgives float rounding of the differences (0.96 - 0.95 > 0.01 in binary)

RUN_COLUMNS = [
    "dataset", "model", "method", "label", "family", "variant", "seed", "run", "run_dir", "stop_reason", "tol", "growth_ratio",
    "curve_points", "curve_max_density", "discovered_round", "discovered_density", "discovered_val_accuracy",
    "discovered_val_fitted", "discovered_test_accuracy", "oracle_round", "oracle_density", "oracle_val_accuracy",
    "oracle_val_fitted", "oracle_test_accuracy", "plateau_val_accuracy", "plateau_test_accuracy", "error_steps",
    "error_rounds", "val_shortfall", "test_shortfall",
]
AGGREGATE_COLUMNS = [
    "dataset", "model", "method", "label", "variant", "seeds",
    "discovered_density_mean", "discovered_density_min", "discovered_density_max",
    "oracle_density_mean", "oracle_density_min", "oracle_density_max",
    "error_steps_mean", "error_steps_min", "error_steps_max",
    "val_shortfall_mean", "val_shortfall_min", "val_shortfall_max", "test_shortfall_mean",
    "discovered_max_over_min",
]


def _int(value: float) -> int | None:
    return int(value) if math.isfinite(value) else None


def _num(value: Any) -> float:
    if value is None or value == "" or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------- the curve


def isotonic(values: Sequence[float], weights: Sequence[float] | None = None) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in (weighted) least squares, by pool
    adjacent violators: blocks that decrease are merged into their weighted mean."""
    y = np.asarray(values, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for yi, wi in zip(y, w):
        blocks.append([yi * wi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, ww, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += ww
            blocks[-1][2] += n
    return np.concatenate([np.full(int(n), s / ww) for s, ww, n in blocks]) if blocks else y.copy()


@dataclass(frozen=True)
class FullCurve:
    """A growth run's full-training points, sorted by density, with isotonic fits of both accuracies."""

    rounds: np.ndarray  # the snapshot round of each point (NaN where the record does not say)
    density: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_fit: np.ndarray
    test_fit: np.ndarray  # NaN when some point lacks a test accuracy

    @property
    def plateau(self) -> float:
        return float(self.val_fit.max())

    @property
    def test_plateau(self) -> float:
        return float(self.test_fit.max()) if np.isfinite(self.test_fit).all() else math.nan

    def oracle_index(self, tol: float) -> int:
        """The smallest density whose fitted validation accuracy is within tol of the plateau."""
        return int(np.argmax(self.val_fit >= self.plateau - tol - _EPS))

    def index_of(self, density: float) -> int | None:
        hits = np.flatnonzero(np.isclose(self.density, density, rtol=1e-9, atol=0.0))
        return int(hits[0]) if hits.size else None

    def at(self, values: np.ndarray, density: float) -> float:
        """`values` (one per point) at `density`: the point's own, else interpolated in log density."""
        i = self.index_of(density)
        if i is not None:
            return float(values[i])
        if not (math.isfinite(density) and density > 0) or not np.isfinite(values).all():
            return math.nan
        return float(np.interp(math.log(density), np.log(self.density), values))


def full_curve(curve_rows: Iterable[Mapping[str, Any]]) -> FullCurve | None:
    """The full-training (``extensive``) points of curve.csv rows; None with fewer than 3."""
    pts = []
    for c in curve_rows:
        if phase_of(c) != "extensive":
            continue
        d, val = _num(c.get("density")), _num(c.get("val_accuracy"))
        if math.isfinite(d) and d > 0 and math.isfinite(val):
            pts.append((d, _num(c.get("round")), val, _num(c.get("test_accuracy"))))
    if len(pts) < MIN_CURVE_POINTS:
        return None
    pts.sort(key=lambda p: p[0])
    density, rounds, val, test = (np.array(col, dtype=float) for col in zip(*pts))
    test_fit = isotonic(test) if np.isfinite(test).all() else np.full_like(test, math.nan)
    return FullCurve(rounds, density, val, test, isotonic(val), test_fit)


def discovery_error(curve: FullCurve, tol: float, discovered_density: float, growth_ratio: float) -> dict:
    """The oracle of `curve` at `tol` and how far `discovered_density` is from it."""
    i = curve.oracle_index(tol)
    oracle = float(curve.density[i])
    j = curve.index_of(discovered_density)  # None: not a curve point (values interpolated, raw ones unknown)
    steps = math.log(discovered_density / oracle) / math.log(growth_ratio) if discovered_density > 0 and growth_ratio > 1 else math.nan
    return {
        "oracle_round": _int(float(curve.rounds[i])),
        "oracle_density": oracle,
        "oracle_val_accuracy": float(curve.val[i]),
        "oracle_val_fitted": float(curve.val_fit[i]),
        "oracle_test_accuracy": float(curve.test[i]),
        "plateau_val_accuracy": curve.plateau,
        "plateau_test_accuracy": curve.test_plateau,
        "discovered_val_accuracy": float(curve.val[j]) if j is not None else math.nan,
        "discovered_val_fitted": curve.at(curve.val_fit, discovered_density),
        "discovered_test_accuracy": float(curve.test[j]) if j is not None else math.nan,
        "error_steps": steps,
        "error_rounds": _int(float(curve.rounds[j] - curve.rounds[i])) if j is not None else None,
        "val_shortfall": curve.plateau - curve.at(curve.val_fit, discovered_density),
        "test_shortfall": curve.test_plateau - curve.at(curve.test_fit, discovered_density),
    }


# ---------------------------------------------------------------- one run


def growth_settings(config: Mapping[str, Any]) -> tuple[float, float]:
    """(growth.stop.tol, growth.growth_ratio) of a flat config, the schema's defaults where absent."""
    from growth.config.schema import GrowthConfig, StopConfig

    tol, ratio = _num(config.get("growth.stop.tol")), _num(config.get("growth.growth_ratio"))
    return (tol if math.isfinite(tol) else StopConfig().tol, ratio if math.isfinite(ratio) else GrowthConfig().growth_ratio)


def run_records(run_dir: str | Path) -> dict:
    """A run directory's records: flat ``config``, ``summary``, ``rounds`` and ``curve`` rows (as text)."""
    run_dir = Path(run_dir)
    return {"config": read_config(run_dir), "summary": _read_json(run_dir / "summary.json") or {},
            "rounds": _read_csv(run_dir / "rounds.csv"), "curve": _read_csv(run_dir / "curve.csv")}


def run_discovery(run_dir: str | Path, tol: float | None = None) -> dict | None:
    """The oracle density and the discovery error of one finished run (see the module's
    docstring); None when the run has no full curve (fewer than 3 points) or no discovered density."""
    rec = run_records(run_dir)
    summary, config = rec["summary"], rec["config"]
    if summary.get("status", "finished") != "finished":
        return None
    discovered = _num(summary.get("discovered_density"))
    curve = full_curve(rec["curve"])
    if curve is None or not (math.isfinite(discovered) and discovered > 0):
        return None
    own_tol, ratio = growth_settings(config)
    tol = own_tol if tol is None else float(tol)
    method = summary.get("method") or config.get("method.name")
    meta = record_meta(method, summary, rec["rounds"], rec["curve"])
    seed = summary.get("seed", config.get("seed"))
    out = {
        "dataset": summary.get("dataset") or config.get("dataset.name"), "model": summary.get("model") or config.get("model.name"),
        "method": method, "label": meta["label"], "family": meta["family"], "variant": "",
        "seed": int(seed) if math.isfinite(_num(seed)) else None, "run": Path(run_dir).name, "run_dir": str(run_dir),
        "stop_reason": summary.get("stop_reason") or "", "tol": tol, "growth_ratio": ratio,
        "curve_points": int(curve.density.size), "curve_max_density": float(curve.density.max()),
        "discovered_round": _int(_num(summary.get("discovered_round"))), "discovered_density": discovered,
    }
    out.update(discovery_error(curve, tol, discovered, ratio))
    return {k: out.get(k) for k in RUN_COLUMNS}


# ---------------------------------------------------------------- many runs


def discovery_table(table_or_paths: pd.DataFrame | str | Path | Iterable[str | Path], tol: float | None = None) -> pd.DataFrame:
    """One row per finished growth-family run with its full curve (RUN_COLUMNS), from the paths
    (a results root, a study directory, run directories: as :func:`analysis.load.load_table`) or
    from a table already loaded (its runs' directories are read; ones not on this machine are left out)."""
    if isinstance(table_or_paths, pd.DataFrame):
        table = table_or_paths
    else:
        table = load_table(table_or_paths)  # finds the run directories (ValueError naming a path without runs)
    if table.empty or "family" not in table.columns:
        return pd.DataFrame(columns=RUN_COLUMNS)
    runs = table[(table["family"] == "growth") & (table["status"] == "finished")].drop_duplicates("run_dir")
    info = method_info(table)
    rows = []
    for run in runs.itertuples():
        if not isinstance(run.run_dir, str) or not Path(run.run_dir).is_dir():
            continue
        found = run_discovery(run.run_dir, tol)
        if found is not None:
            found["variant"] = run.variant if isinstance(run.variant, str) else ""
            rows.append(found)
    rows.sort(key=lambda r: (str(r["dataset"]), str(r["model"]), info_of(info, r["method"]).sort_key(), r["variant"],
                             r["seed"] if r["seed"] is not None else -1, r["run"]))
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _geomean(values: pd.Series) -> float:
    v = values.dropna().astype(float)
    return float(np.exp(np.log(v).mean())) if not v.empty else math.nan


def aggregate_discovery(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, method, variant), over seeds: mean (geometric for densities, which
    live on a log scale), min and max of the discovered and oracle densities, of the error in
    steps and of the validation shortfall; the mean test shortfall; and the largest over the
    smallest discovered density (1: every seed stopped at the same density)."""
    rows = []
    for key, g in per_run.groupby(["dataset", "model", "method", "variant"], sort=False, dropna=False):
        dataset, model, method, variant = key
        row = {"dataset": dataset, "model": model, "method": method, "label": g["label"].iloc[0], "variant": variant,
               "seeds": int(len(g))}
        for col in ("discovered_density", "oracle_density"):
            row.update({f"{col}_mean": _geomean(g[col]), f"{col}_min": g[col].min(), f"{col}_max": g[col].max()})
        for col in ("error_steps", "val_shortfall"):
            row.update({f"{col}_mean": g[col].mean(), f"{col}_min": g[col].min(), f"{col}_max": g[col].max()})
        row["test_shortfall_mean"] = g["test_shortfall"].mean()
        row["discovered_max_over_min"] = float(g["discovered_density"].max() / g["discovered_density"].min())
        rows.append(row)
    return pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)
