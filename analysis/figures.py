"""Accuracy and cost against density (paper Figures 4 and 5), and accuracy against cost. Every
function returns a matplotlib ``Figure`` whose lines carry the series as gid (``method|variant``),
so callers and tests can read the plotted data back.

Which methods a panel shows comes from their records' family and headline flag: Fig. 4 shows
every growth method, Fig. 5 the headline growth method(s) beside every fixed-density and
pruning method; the cost figures show every method but the dense reference."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.aggregation import (aggregate, band, band_note, curve_points, dense_points, dense_reference, density_groups,
                                  discovered_points, n_seeds, select, series_keys)
from analysis.methods import MethodInfo, headline_growth, info_of, method_info, of_family
from analysis.style import (LineStyles, color, legend, log_density_axis, new_figure, no_data, series_colors, series_label,
                            short_label, short_series_label)

# Series whose every value agrees within this relative difference are drawn as one line.
SAME_VALUE = 0.01


def _draw_series(ax, pts: pd.DataFrame, keys, info: Mapping[str, MethodInfo], value: str, scale: float, x: str = "density",
                 log_x: bool = True, merge_identical: bool = False, colors: dict | None = None) -> list[int]:
    """One line per (method, variant): the mean over seeds, with a band where a point has
    several seeds (:func:`analysis.aggregation.band`: the 95% bootstrap interval from 3 seeds,
    min-max with 2). With merge_identical, series with the very same points are drawn once with a
    joint label (matched budgets give identical cost curves, which would hide each other).
    Returns the seed counts of the points drawn, for the note on what the band is."""
    series = []
    for method, variant in keys:
        g = pts[(pts["method"] == method) & (pts["variant"] == variant)]
        agg = aggregate(g, value, x=x, log_x=log_x)
        if not agg.empty:
            series.append(([(method, variant)], agg))
    if merge_identical:
        merged: list = []
        for members, agg in series:
            cols = [x, "mean", "min", "max"]
            twin = next((m for m in merged if len(m[1]) == len(agg)
                         and np.allclose(m[1][cols].to_numpy(float), agg[cols].to_numpy(float), rtol=SAME_VALUE, atol=0)), None)
            if twin is not None:
                twin[0].extend(members)
            else:
                merged.append((list(members), agg))
        series = merged
    styles = LineStyles()
    seed_counts: list[int] = []
    for members, agg in series:
        method, variant = members[0]
        style = styles.next(method)
        if len(members) > 1:
            joined = ", ".join(short_series_label(info, m, v) for m, v in members)
            text = textwrap.fill(joined + ": the same cost (within 1%)", 42)
        else:
            text = series_label(info, method, variant)
        c = (colors or {}).get((method, variant), color(info, method))
        ax.plot(agg[x], scale * agg["mean"], style, marker="o", ms=3, lw=1.5, color=c,
                label=text, gid=";".join(f"{m}|{v}" for m, v in members))
        seed_counts += [int(n) for n in agg["n"]]
        if (agg["n"] > 1).any():
            low, high = band(agg)
            ax.fill_between(agg[x], scale * low, scale * high, color=c, alpha=0.15, lw=0,
                            gid="band|" + ";".join(f"{m}|{v}" for m, v in members))
    return seed_counts


def _draw_discovered(ax, sel: pd.DataFrame, methods: Iterable[str], info: Mapping[str, MethodInfo], value: str, scale: float,
                     x: str = "density", colors: dict | None = None) -> bool:
    """A star per growth series at its discovered density; later stars are drawn smaller, so
    stars at the same place (same density and cost) stay visible as rings."""
    disc = discovered_points(sel)
    methods = set(methods)
    disc = disc.iloc[sorted(range(len(disc)), key=lambda i: (info_of(info, disc["method"].iat[i]).sort_key(), disc["variant"].iat[i]))]
    placed: list[tuple[float, float]] = []
    for row in disc.itertuples():
        if row.method not in methods:
            continue
        px, py = float(getattr(row, x)), float(scale * getattr(row, value))
        under = sum(1 for qx, qy in placed if math.isclose(px, qx, rel_tol=0.02) and math.isclose(py, qy, rel_tol=0.01))
        c = (colors or {}).get((row.method, row.variant), color(info, row.method))
        filled = c if row.by_rule else "white"
        lo, hi = float(getattr(row, f"{x}_min")), float(getattr(row, f"{x}_max"))
        if x == "density":  # a drop line, so the discovered density reads off the x-axis
            ax.axvline(px, ymax=0.97, color=c, ls=":", lw=1.2, alpha=0.9, zorder=1,
                       gid=f"discovered-x|{row.method}|{row.variant}")
        if hi > lo:  # seeds discovered different densities: their range
            ax.plot([lo, hi], [py, py], "-", marker="|", ms=8, lw=1.2, color=c, alpha=0.8,
                    zorder=4, gid=f"discovered-range|{row.method}|{row.variant}")
        ax.plot([px], [py], marker="*", ms=max(6, 18 - 5 * under), ls="none", color=c, mfc=filled,
                mec=c, mew=1.5, zorder=5 + len(placed), gid=f"discovered|{row.method}|{row.variant}")
        placed.append((px, py))
    return bool(placed)


def panels(info: Mapping[str, MethodInfo]) -> list[tuple[str, list[str], str]]:
    """The two panels of the performance-density figure: (title, methods, what is missing)."""
    heads = headline_growth(info)
    named = ", ".join(short_label(info, m) for m in heads) or "the headline growth method"
    return [
        ("(a) growth mechanisms, same train-and-grow budget (paper Fig. 4)", of_family(info, "growth"), "growth runs"),
        (f"(b) {named} vs pruning and fixed-density training (paper Fig. 5)",
         [*heads, *of_family(info, "pruning", "fixed_density")], "runs of the headline, pruning or fixed-density methods"),
    ]


def plot_performance_density(table: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> Figure:
    """Test accuracy after full training vs density; (a) growth methods (paper Fig. 4),
    (b) the headline growth method against pruning and fixed-density methods (paper Fig. 5).
    Mean over seeds; the band is the 95% bootstrap interval of the mean at points with 3 seeds or
    more, the min-max range at points with 2 (the title says which)."""
    info = method_info(table)
    sel, where = select(table, dataset, model)
    pts = curve_points(sel)
    dense = dense_reference(sel, info)
    colors = series_colors(pts, info)
    fig, axes = new_figure(13, 5.2, 2)
    seed_counts: list[int] = []
    for ax, (title, methods, missing) in zip(axes, panels(info)):
        keys = series_keys(pts, info, methods)
        seed_counts += _draw_series(ax, pts, keys, info, "test_accuracy", 100, colors=colors)
        drawn = _draw_discovered(ax, sel, methods, info, "test_accuracy", 100, colors=colors)
        if dense is not None:
            ax.axhline(100 * dense, color="black", ls="--", lw=1, label=f"dense, 100% density ({100 * dense:.2f}%)", gid="dense")
        log_density_axis(ax)
        ax.set_ylabel("test accuracy after full training (%)")
        ax.set_title(title, fontsize=10)
        if not keys:
            no_data(ax, missing)
        legend(ax, drawn)
    n = n_seeds(sel)
    note = band_note(seed_counts)
    fig.suptitle(f"Performance vs density: {where} (mean over {n} seed{'s' if n != 1 else ''}"
                 + (f"; {note})" if note else ")"), fontsize=12)
    return fig


def _costed(info: Mapping[str, MethodInfo]) -> list[str]:
    """Methods drawn against cost: all but the dense reference (it is the unit of cost)."""
    return of_family(info, "growth", "pruning", "fixed_density")


def plot_cost_density(table: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> Figure:
    """Cumulative training cost (dense-run units) of each curve point vs its density."""
    info = method_info(table)
    sel, where = select(table, dataset, model)
    pts = curve_points(sel)
    fig, (ax,) = new_figure(11.5, 5.2)
    keys = series_keys(pts, info, _costed(info))
    colors = series_colors(pts, info)
    seed_counts = _draw_series(ax, pts, keys, info, "cost_epochs", 1, merge_identical=True, colors=colors)
    drawn = _draw_discovered(ax, sel, [k[0] for k in keys], info, "cost_epochs", 1, colors=colors)
    ax.axhline(1.0, color="black", ls="--", lw=1, label="one dense training run (= 1)", gid="dense")
    log_density_axis(ax)
    ax.set_ylabel("cumulative training cost (dense training runs)")
    ax.set_ylim(bottom=0)
    note = band_note(seed_counts)
    ax.set_title(f"Training cost vs density: {where}\n(growth: rounds up to the density + its full training; "
                 "pruning: all levels down to it)\nmean over seeds" + (f"; {note}" if note else ""), fontsize=10)
    if not keys:
        no_data(ax, "curve points")
    legend(ax, drawn, outside=True)
    return fig


def plot_accuracy_cost(table: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> Figure:
    """Test accuracy vs cumulative training cost, one line per method through its densities;
    (a) every cost, (b) a zoom on the costs of the growth and fixed-density methods (pruning
    levels stretch the axis far beyond them)."""
    info = method_info(table)
    sel, where = select(table, dataset, model)
    pts = curve_points(sel)
    fig, axes = new_figure(15, 5.2, 2)
    keys = series_keys(pts, info, _costed(info))
    series = []
    for method, variant in keys:
        g = pts[(pts["method"] == method) & (pts["variant"] == variant)].dropna(subset=["cost_epochs"]).sort_values("density")
        g = g.assign(_g=density_groups(g["density"].to_numpy(float)))
        series.append((method, variant, g.groupby("_g")[["cost_epochs", "test_accuracy"]].mean()))
    dense = dense_points(sel, info)
    colors = series_colors(pts, info)
    unpruned = [agg for m, _, agg in series if info_of(info, m).family != "pruning"]
    zoom_max = 1.03 * max((agg["cost_epochs"].max() for agg in unpruned), default=0.0)
    titles = ["(a) all costs", f"(b) zoom: costs up to {zoom_max:.2f} dense runs"]
    for i, ax in enumerate(axes):
        styles = LineStyles()
        for method, variant, agg in series:
            ax.plot(agg["cost_epochs"], 100 * agg["test_accuracy"], styles.next(method), marker="o", ms=3,
                    color=colors[(method, variant)], label=series_label(info, method, variant), gid=f"{method}|{variant}")
        drawn = _draw_discovered(ax, sel, [k[0] for k in keys], info, "test_accuracy", 100, x="cost_epochs", colors=colors)
        if not dense.empty:
            ax.plot([dense["cost_epochs"].mean()], [100 * dense["test_accuracy"].mean()], "s", ms=8, color="black",
                    label="dense (100% density)", gid="dense")
        ax.set_xlabel("cumulative training cost (dense training runs)")
        ax.set_ylabel("test accuracy after full training (%)")
        ax.grid(True, alpha=0.3)
        ax.set_title(titles[i], fontsize=10)
        if not keys:
            no_data(ax, "curve points")
    shown = pts[pts["cost_epochs"] <= zoom_max]
    if zoom_max > 0 and not shown.empty:
        lo = min(shown["cost_epochs"].min(), dense["cost_epochs"].min() if not dense.empty else np.inf)
        axes[1].set_xlim(0.98 * lo, zoom_max)
        ys = 100 * shown["test_accuracy"]
        pad = 0.03 * (ys.max() - ys.min() + 1)
        axes[1].set_ylim(ys.min() - pad, ys.max() + pad)
    else:
        axes[1].set_visible(False)
    legend(axes[-1], drawn, outside=True)
    fig.suptitle(f"Accuracy vs training cost: {where} (each point is one density; mean over seeds)", fontsize=12)
    return fig
