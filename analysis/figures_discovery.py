"""One figure per growth run with its full curve: where the stopping rule stopped against the
oracle density (:mod:`analysis.discovery`).

Proxy accuracy after each round (rounds.csv) with the logistic fit of the stopping round (its
``fit_a, fit_b, fit_k, fit_x0``), the full-training validation curve (points and its isotonic
fit, the plateau less tol dotted), test accuracy faintly for information, and vertical markers at
the discovered and the oracle density. Each line's gid names what it is (``proxy``,
``logistic_fit``, ``val_curve``, ``val_isotonic``, ``plateau_tol``, ``test_curve``,
``discovered``, ``oracle``), so its data can be read back."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.discovery import _num, full_curve, run_discovery, run_records
from analysis.style import log_density_axis, new_figure
from growth.stopping import logistic

FIT_KEYS = ("fit_a", "fit_b", "fit_k", "fit_x0")


def figure_name(run_dir: str | Path) -> str:
    return f"discovery_{Path(run_dir).name}.png"


def plot_discovery(run_dir: str | Path, tol: float | None = None) -> Figure | None:
    """The figure of one run (None when it has no full curve or no discovered density)."""
    found = run_discovery(run_dir, tol)
    if found is None:
        return None
    rec = run_records(run_dir)
    curve = full_curve(rec["curve"])
    rounds = [r for r in rec["rounds"] if math.isfinite(_num(r.get("density"))) and math.isfinite(_num(r.get("proxy_accuracy")))]
    fig, (ax,) = new_figure(8.5, 5.2)
    if rounds:
        ax.plot([_num(r["density"]) for r in rounds], [100 * _num(r["proxy_accuracy"]) for r in rounds], "o-", ms=3.5, lw=1,
                color="C0", gid="proxy", label="proxy accuracy after each round (validation, rough training)")
    stop = next((r for r in rounds if _num(r.get("round")) == _num(found["discovered_round"])), None)
    params = [_num(stop.get(k)) for k in FIT_KEYS] if stop else []
    if params and all(math.isfinite(p) for p in params):
        lo, hi = min(_num(r["density"]) for r in rounds), max(_num(r["density"]) for r in rounds)
        xs = np.logspace(math.log10(lo), math.log10(hi), 200)
        ax.plot(xs, 100 * logistic(np.log10(xs), *params), "-", lw=1.5, color="C0", alpha=0.6, gid="logistic_fit",
                label=f"logistic fit of the stopping round ({int(_num(stop['round']))})")
    ax.plot(curve.density, 100 * curve.val, "s", ms=4.5, mfc="none", color="C2", gid="val_curve",
            label="validation accuracy after full training")
    ax.plot(curve.density, 100 * curve.val_fit, "-", lw=2, color="C2", gid="val_isotonic",
            label=f"its isotonic fit (plateau {100 * curve.plateau:.2f}%)")
    ax.axhline(100 * (curve.plateau - found["tol"]), color="C2", ls=":", lw=1, gid="plateau_tol",
               label=f"plateau - tol ({found['tol']:g})")
    if np.isfinite(curve.test).all():
        ax.plot(curve.density, 100 * curve.test, "^", ms=3.5, color="gray", alpha=0.6, gid="test_curve",
                label="test accuracy after full training (not used to decide)")
    ax.axvline(found["discovered_density"], color="C3", ls="--", lw=1.5, gid="discovered",
               label=f"discovered {100 * found['discovered_density']:.2f}% (round {found['discovered_round']})")
    steps = found["error_steps"]
    ax.axvline(found["oracle_density"], color="k", ls="-.", lw=1.5, gid="oracle",
               label=f"oracle {100 * found['oracle_density']:.2f}%: error {steps:+.2f} growth steps, "
                     f"shortfall {100 * found['val_shortfall']:.2f} points")
    log_density_axis(ax)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7.5, loc="lower right", framealpha=1.0)
    seed = found["seed"]
    fig.suptitle(f"Discovered against oracle density: {found['label']} on {found['dataset']} / {found['model']}, seed {seed}",
                 fontsize=11)
    ax.set_title(Path(run_dir).name, fontsize=8, color="gray")
    return fig


def save_discovery_figures(run_dirs: Iterable[str | Path], out: str | Path) -> list[Path]:
    """``discovery_<run dir name>.png`` in `out` for each run with its full curve."""
    written = []
    for run_dir in run_dirs:
        if not isinstance(run_dir, (str, Path)) or pd.isna(run_dir):
            continue
        fig = plot_discovery(run_dir)
        if fig is None:
            continue
        path = Path(out) / figure_name(run_dir)
        fig.savefig(path, dpi=120)
        written.append(path)
    return written
