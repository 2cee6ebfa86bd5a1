"""How the figures look: each method's label, short label and colour (from its records, see
:mod:`analysis.methods`), line styles, and the figure helpers (canvas, log density axis, legend,
saving). Figures are drawn with the Agg canvas, no pyplot state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator

from analysis.methods import MethodInfo, info_of

STYLES = ["-", "--", ":", "-."]


def label(info: Mapping[str, MethodInfo], method: str) -> str:
    return info_of(info, method).label


def short_label(info: Mapping[str, MethodInfo], method: str) -> str:
    return info_of(info, method).short_label


def color(info: Mapping[str, MethodInfo], method: str) -> str:
    return info_of(info, method).color


def series_label(info: Mapping[str, MethodInfo], method: str, variant: str) -> str:
    return label(info, method) + (f" [{variant}]" if variant else "")


def short_series_label(info: Mapping[str, MethodInfo], method: str, variant: str) -> str:
    return short_label(info, method) + (f" [{variant}]" if variant else "")


def series_colors(points: pd.DataFrame, info: Mapping[str, MethodInfo]) -> dict[tuple[str, str], tuple]:
    """A colour per (method, variant): the method's colour, and for a method with several
    variants, shades of it from dark to light (so its stars and lines stay told apart)."""
    from matplotlib.colors import to_rgb

    out = {}
    for method, g in points.groupby("method"):
        variants = sorted(g["variant"].unique())
        base = np.array(to_rgb(color(info, method)))
        for i, variant in enumerate(variants):
            if len(variants) == 1:
                out[(method, variant)] = tuple(base)
                continue
            t = i / (len(variants) - 1)  # 0: darker, 1: lighter
            shade = base * (1 - 0.45 * (1 - t)) if t < 0.5 else base + (1 - base) * 0.55 * (t - 0.5) * 2
            out[(method, variant)] = tuple(np.clip(shade, 0, 1))
    return out


class LineStyles:
    """Successive line styles per method (its variants are told apart by style as well as shade)."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}

    def next(self, method: str) -> str:
        i = self._count.get(method, 0)
        self._count[method] = i + 1
        return STYLES[i % len(STYLES)]


# ---------------------------------------------------------------- figure helpers


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save(fig: Figure, stem: Path) -> list[Path]:
    out = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=150 if ext == "png" else None)
        out.append(path)
    return out


def percent(x: float, _pos=None) -> str:
    if x <= 0:
        return ""
    pct = 100 * x
    return f"{pct:.0f}%" if pct >= 1 else f"{pct:.2g}%"


def log_density_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(percent))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, pos: ""))
    ax.set_xlabel("density (fraction of weights kept, log scale)")
    ax.grid(True, which="major", alpha=0.3)


def no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in these records", ha="center", va="center", transform=ax.transAxes, color="gray")


def legend(ax, discovered: bool, extra: Sequence[Line2D] = (), outside: bool = False) -> None:
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = list(handles), list(labels)
    if discovered:
        handles += [Line2D([], [], marker="*", ms=12, ls="none", color="black"),
                    Line2D([], [], marker="*", ms=12, ls="none", color="black", mfc="white")]
        labels += ["discovered density (stopping rule); bar: range over seeds",
                   "growth reached a cap in some seed (rule did not fire there)"]
    for h in extra:
        handles.append(h)
        labels.append(h.get_label())
    if handles and outside:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    elif handles:
        ax.legend(handles, labels, fontsize=8, loc="best", framealpha=1.0)
