"""Figures from the tidy table (see :mod:`analysis.load`). Every function returns a matplotlib
``Figure`` (drawn with the Agg canvas, no pyplot state), so callers and tests can read the
plotted data back; :func:`save` writes it as PNG and PDF."""

from __future__ import annotations

import math
import textwrap

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from analysis.load import CURVE_PHASES, GROWTH_METHODS

# Panels in the layout of the paper's Figures 4 and 5.
FIG4_METHODS = ("pwmpr", "pwmp", "rg", "gg")
FIG5_METHODS = ("pwmpr", "imp_c", "rigl", "phew")
NAMES = {
    "pwmpr": "PWMPR",
    "pwmp": "PWMP (top-k ablation)",
    "rg": "RG (random growth)",
    "gg": "GG (gradient growth)",
    "imp_c": "IMP-C",
    "rigl": "RigL (matched budget)",
    "phew": "PHEW (matched budget)",
    "masks": "given masks",
    "dense": "dense",
}
SHORT = {"pwmpr": "PWMPR", "pwmp": "PWMP", "rg": "RG", "gg": "GG", "imp_c": "IMP-C", "rigl": "RigL", "phew": "PHEW", "masks": "masks", "dense": "dense"}
COLORS = {
    "pwmpr": "tab:red", "pwmp": "tab:orange", "rg": "tab:blue", "gg": "tab:green",
    "imp_c": "tab:purple", "rigl": "tab:brown", "phew": "tab:pink", "masks": "tab:olive", "dense": "black",
}
_EXTRA_COLORS = ["tab:olive", "tab:cyan", "tab:gray", "darkblue", "darkgreen"]
_STYLES = ["-", "--", ":", "-."]
# Points of different seeds within this density factor are one point of the mean curve.
_SAME_DENSITY = 1.02
# Series whose every value agrees within this relative difference are drawn as one line.
_SAME_VALUE = 0.01


def name(method: str) -> str:
    return NAMES.get(method, method)


def color(method: str) -> str:
    if method in COLORS:
        return COLORS[method]
    return _EXTRA_COLORS[sum(map(ord, method)) % len(_EXTRA_COLORS)]


def series_colors(points: pd.DataFrame) -> dict[tuple[str, str], tuple]:
    """A colour per (method, variant): the method's colour, and for a method with several
    variants, shades of it from dark to light (so its stars and lines stay told apart)."""
    from matplotlib.colors import to_rgb

    out = {}
    for method, g in points.groupby("method"):
        variants = sorted(g["variant"].unique())
        base = np.array(to_rgb(color(method)))
        for i, variant in enumerate(variants):
            if len(variants) == 1:
                out[(method, variant)] = tuple(base)
                continue
            t = i / (len(variants) - 1)  # 0: darker, 1: lighter
            shade = base * (1 - 0.45 * (1 - t)) if t < 0.5 else base + (1 - base) * 0.55 * (t - 0.5) * 2
            out[(method, variant)] = tuple(np.clip(shade, 0, 1))
    return out


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


def _percent(x: float, _pos=None) -> str:
    if x <= 0:
        return ""
    pct = 100 * x
    return f"{pct:.0f}%" if pct >= 1 else f"{pct:.2g}%"


def _log_density_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_percent))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, pos: ""))
    ax.set_xlabel("density (fraction of weights kept, log scale)")
    ax.grid(True, which="major", alpha=0.3)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in these records", ha="center", va="center", transform=ax.transAxes, color="gray")


# ---------------------------------------------------------------- selections


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


def series_keys(points: pd.DataFrame, methods: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(method, variant) pairs in a stable order: the given methods first, then the rest."""
    keys = points[["method", "variant"]].drop_duplicates()
    keys = [tuple(k) for k in keys.values.tolist() if methods is None or k[0] in methods]
    order = {m: i for i, m in enumerate(methods or [])}
    return sorted(keys, key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))


def series_label(method: str, variant: str) -> str:
    return name(method) + (f" [{variant}]" if variant else "")


def density_groups(xs: np.ndarray, log_x: bool = True) -> list[int]:
    """Group ids for sorted x values: a new group where x grows by more than _SAME_DENSITY."""
    groups, current = [], 0
    for i in range(len(xs)):
        if i and (xs[i] > xs[i - 1] * _SAME_DENSITY if log_x else xs[i] - xs[i - 1] > 1e-9):
            current += 1
        groups.append(current)
    return groups


def aggregate(points: pd.DataFrame, value: str, x: str = "density", log_x: bool = True) -> pd.DataFrame:
    """Mean, min, max and count of `value` over seeds, per x (x values within a factor
    _SAME_DENSITY are one point, their x the mean)."""
    pts = points[[x, value]].dropna().sort_values(x)
    if pts.empty:
        return pd.DataFrame(columns=[x, "mean", "min", "max", "n"])
    pts = pts.assign(_g=density_groups(pts[x].to_numpy(float), log_x))
    agg = pts.groupby("_g").agg(x=(x, "mean"), mean=(value, "mean"), min=(value, "min"), max=(value, "max"), n=(value, "size"))
    return agg.rename(columns={"x": x}).reset_index(drop=True)


def dense_reference(sel: pd.DataFrame) -> float | None:
    """Mean test accuracy of the finished dense runs (else of other methods' points at density 1)."""
    pts = curve_points(sel)
    dense = pts[pts["method"] == "dense"]
    if dense.empty:
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
                "by_rule": bool(g["stop_reason"].str.startswith("logistic").all()),
            }
        )
    return pd.DataFrame(rows, columns=["method", "variant", "density", "density_min", "density_max", "test_accuracy",
                                       "cost_epochs", "cost_epochs_min", "cost_epochs_max", "n", "by_rule"])


def _n_seeds(sel: pd.DataFrame) -> int:
    pts = curve_points(sel)
    return int(pts.groupby("method")["seed"].nunique().max()) if not pts.empty else 0


# ---------------------------------------------------------------- performance and cost vs density


def _draw_series(ax, pts: pd.DataFrame, keys, value: str, scale: float, x: str = "density", log_x: bool = True,
                 merge_identical: bool = False, colors: dict | None = None) -> None:
    """One line per (method, variant): the mean over seeds, with a min-max band when there are
    several seeds. With merge_identical, series with the very same points are drawn once with a
    joint label (matched budgets give identical cost curves, which would hide each other)."""
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
                         and np.allclose(m[1][cols].to_numpy(float), agg[cols].to_numpy(float), rtol=_SAME_VALUE, atol=0)), None)
            if twin is not None:
                twin[0].extend(members)
            else:
                merged.append((list(members), agg))
        series = merged
    styles: dict[str, int] = {}
    for members, agg in series:
        method, variant = members[0]
        style = _STYLES[styles.setdefault(method, 0) % len(_STYLES)]
        styles[method] += 1
        if len(members) > 1:
            joined = ", ".join(SHORT.get(m, m) + (f" [{v}]" if v else "") for m, v in members)
            label = textwrap.fill(joined + ": the same cost (within 1%)", 42)
        else:
            label = series_label(method, variant)
        c = (colors or {}).get((method, variant), color(method))
        ax.plot(agg[x], scale * agg["mean"], style, marker="o", ms=3, lw=1.5, color=c,
                label=label, gid=";".join(f"{m}|{v}" for m, v in members))
        if (agg["n"] > 1).any():
            ax.fill_between(agg[x], scale * agg["min"], scale * agg["max"], color=c, alpha=0.15, lw=0)


def _draw_discovered(ax, sel: pd.DataFrame, methods, value: str, scale: float, x: str = "density",
                     colors: dict | None = None) -> bool:
    """A star per growth series at its discovered density; later stars are drawn smaller, so
    stars at the same place (same density and cost) stay visible as rings."""
    disc = discovered_points(sel)
    placed: list[tuple[float, float]] = []
    for row in disc.itertuples():
        if row.method not in methods:
            continue
        px, py = float(getattr(row, x)), float(scale * getattr(row, value))
        under = sum(1 for qx, qy in placed if math.isclose(px, qx, rel_tol=0.02) and math.isclose(py, qy, rel_tol=0.01))
        c = (colors or {}).get((row.method, row.variant), color(row.method))
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


def _legend(ax, discovered: bool, extra: Sequence[Line2D] = (), outside: bool = False) -> None:
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


def plot_performance_density(table: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> Figure:
    """Test accuracy after full training vs density; (a) growth methods (paper Fig. 4),
    (b) PWMPR against IMP-C, RigL and PHEW (paper Fig. 5). Mean over seeds, band min-max."""
    sel, where = select(table, dataset, model)
    pts = curve_points(sel)
    dense = dense_reference(sel)
    colors = series_colors(pts)
    fig, axes = new_figure(13, 5.2, 2)
    panels = [
        ("(a) growth mechanisms, same train-and-grow budget (paper Fig. 4)", FIG4_METHODS),
        ("(b) PWMPR vs pruning, dynamic sparse training and pruning at init (paper Fig. 5)", FIG5_METHODS),
    ]
    for ax, (title, methods) in zip(axes, panels):
        keys = series_keys(pts, methods)
        _draw_series(ax, pts, keys, "test_accuracy", 100, colors=colors)
        drawn = _draw_discovered(ax, sel, methods, "test_accuracy", 100, colors=colors)
        if dense is not None:
            ax.axhline(100 * dense, color="black", ls="--", lw=1, label=f"dense, 100% density ({100 * dense:.2f}%)", gid="dense")
        _log_density_axis(ax)
        ax.set_ylabel("test accuracy after full training (%)")
        ax.set_title(title, fontsize=10)
        if not keys:
            _no_data(ax, "runs of " + ", ".join(methods))
        _legend(ax, drawn)
    n = _n_seeds(sel)
    fig.suptitle(f"Performance vs density: {where} (mean over {n} seed{'s' if n != 1 else ''}"
                 + (", band: min-max over seeds)" if n > 1 else ")"), fontsize=12)
    return fig


def plot_cost_density(table: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> Figure:
    """Cumulative training cost (dense-run units) of each curve point vs its density."""
    sel, where = select(table, dataset, model)
    pts = curve_points(sel)
    fig, (ax,) = new_figure(11.5, 5.2)
    keys = [k for k in series_keys(pts, list(FIG4_METHODS) + ["imp_c", "rigl", "phew"]) if k[0] != "dense"]
    colors = series_colors(pts)
    _draw_series(ax, pts, keys, "cost_epochs", 1, merge_identical=True, colors=colors)
    drawn = _draw_discovered(ax, sel, [k[0] for k in keys], "cost_epochs", 1, colors=colors)
    ax.axhline(1.0, color="black", ls="--", lw=1, label="one dense training run (= 1)", gid="dense")
    _log_density_axis(ax)
    ax.set_ylabel("cumulative training cost (dense training runs)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Training cost vs density: {where}\n(growth: rounds up to the density + its full training; "
                 "IMP-C: all levels down to it)", fontsize=10)
    if not keys:
        _no_data(ax, "curve points")
    _legend(ax, drawn, outside=True)
    return fig


def plot_accuracy_cost(table: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> Figure:
    """Test accuracy vs cumulative training cost, one line per method through its densities;
    (a) every cost, (b) a zoom on the costs of the growth and matched-budget methods (IMP-C's
    levels stretch the axis far beyond them)."""
    sel, where = select(table, dataset, model)
    pts = curve_points(sel)
    fig, axes = new_figure(15, 5.2, 2)
    keys = [k for k in series_keys(pts, list(FIG4_METHODS) + ["imp_c", "rigl", "phew"]) if k[0] != "dense"]
    series = []
    for method, variant in keys:
        g = pts[(pts["method"] == method) & (pts["variant"] == variant)].dropna(subset=["cost_epochs"]).sort_values("density")
        g = g.assign(_g=density_groups(g["density"].to_numpy(float)))
        series.append((method, variant, g.groupby("_g")[["cost_epochs", "test_accuracy"]].mean()))
    dense = pts[pts["method"] == "dense"]
    colors = series_colors(pts)
    not_imp = [agg for m, _, agg in series if m != "imp_c"]
    zoom_max = 1.03 * max((agg["cost_epochs"].max() for agg in not_imp), default=0.0)
    titles = ["(a) all costs", f"(b) zoom: costs up to {zoom_max:.2f} dense runs"]
    for i, ax in enumerate(axes):
        styles: dict[str, int] = {}
        for method, variant, agg in series:
            style = _STYLES[styles.setdefault(method, 0) % len(_STYLES)]
            styles[method] += 1
            ax.plot(agg["cost_epochs"], 100 * agg["test_accuracy"], style, marker="o", ms=3, color=colors[(method, variant)],
                    label=series_label(method, variant), gid=f"{method}|{variant}")
        drawn = _draw_discovered(ax, sel, [k[0] for k in keys], "test_accuracy", 100, x="cost_epochs", colors=colors)
        if not dense.empty:
            ax.plot([dense["cost_epochs"].mean()], [100 * dense["test_accuracy"].mean()], "s", ms=8, color="black",
                    label="dense (100% density)", gid="dense")
        ax.set_xlabel("cumulative training cost (dense training runs)")
        ax.set_ylabel("test accuracy after full training (%)")
        ax.grid(True, alpha=0.3)
        ax.set_title(titles[i], fontsize=10)
        if not keys:
            _no_data(ax, "curve points")
    shown = pts[pts["cost_epochs"] <= zoom_max]
    if zoom_max > 0 and not shown.empty:
        lo = min(shown["cost_epochs"].min(), dense["cost_epochs"].min() if not dense.empty else np.inf)
        axes[1].set_xlim(0.98 * lo, zoom_max)
        ys = 100 * shown["test_accuracy"]
        pad = 0.03 * (ys.max() - ys.min() + 1)
        axes[1].set_ylim(ys.min() - pad, ys.max() + pad)
    else:
        axes[1].set_visible(False)
    _legend(axes[-1], drawn, outside=True)
    fig.suptitle(f"Accuracy vs training cost: {where} (each point is one density; mean over seeds)", fontsize=12)
    return fig


# ---------------------------------------------------------------- growth timing (paper Fig. 3)


def timing_method(sel: pd.DataFrame) -> str | None:
    methods = [m for m in GROWTH_METHODS if (sel["method"] == m).any()]
    return methods[0] if methods else None


def plot_growth_timing(table: pd.DataFrame, dataset: str | None = None, model: str | None = None,
                       method: str | None = None) -> Figure:
    """(a) batches before each growth decision, (b) validation accuracy after rough training,
    (c) test accuracy after extensive training; one line per round-timing schedule
    (growth.timing.mode / growth.timing.epochs of each run), for one growth method."""
    sel, where = select(table, dataset, model)
    method = method or timing_method(sel)
    fin = sel[(sel["status"] == "finished") & (sel["method"] == method)]
    rounds = fin[fin["phase"] == "growth round"]
    ext = fin[(fin["phase"] == "extensive") & fin["test_accuracy"].notna()]
    fig, axes = new_figure(15, 4.8, 3)
    timings = sorted(t for t in fin["timing"].unique() if t)
    panels = [
        (axes[0], rounds, "batches", 1, "batches trained before the growth decision", "(a) round length"),
        (axes[1], rounds, "val_accuracy", 100, "validation accuracy after rough training (%)", "(b) after rough training (proxy)"),
        (axes[2], ext, "test_accuracy", 100, "test accuracy after extensive training (%)", "(c) after extensive training"),
    ]
    for ax, data, value, scale, ylabel, title in panels:
        for i, timing in enumerate(timings):
            agg = aggregate(data[data["timing"] == timing], value)
            if agg.empty:
                continue
            ax.plot(agg["density"], scale * agg["mean"], _STYLES[i % len(_STYLES)], marker="o", ms=3,
                    color=f"C{i}", label=timing, gid=timing)
            if (agg["n"] > 1).any():
                ax.fill_between(agg["density"], scale * agg["min"], scale * agg["max"], color=f"C{i}", alpha=0.15, lw=0)
        _log_density_axis(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        if value == "batches":
            ax.set_ylim(bottom=0)
        if not ax.lines:
            _no_data(ax, "points")
        else:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"Growth timing: {name(method) if method else 'no growth runs'} on {where} "
                 f"(one line per round-timing schedule, mean over seeds)", fontsize=12)
    return fig


# ---------------------------------------------------------------- per-layer density


def plot_layer_density(table: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> Figure:
    """Each layer's density over the growth rounds of one run per growth method (lowest seed)."""
    sel, where = select(table, dataset, model)
    rounds = sel[(sel["status"] == "finished") & (sel["phase"] == "growth round")]
    layer_cols = [c for c in sel.columns if c.startswith("layer_density:") and rounds[c].notna().any()]
    methods = [m for m in GROWTH_METHODS if (rounds["method"] == m).any()]
    methods += sorted(m for m in rounds["method"].unique() if m not in methods)
    fig, axes = new_figure(max(5.0, 4.2 * max(1, len(methods))), 4.8, max(1, len(methods)))
    for ax, method in zip(axes, methods):
        g = rounds[rounds["method"] == method]
        first = g.sort_values(["variant", "seed"]).iloc[0]
        run = g[g["run_dir"] == first["run_dir"]].sort_values("round")
        for i, col in enumerate(layer_cols):
            if run[col].notna().any():
                ax.plot(run["round"], 100 * run[col], marker="o", ms=2.5, lw=1.2, color=f"C{i % 10}",
                        label=col.split(":", 1)[1], gid=col)
        ax.plot(run["round"], 100 * run["density"], "k--", lw=1.5, label="whole network", gid="overall")
        disc = run[run["discovered"]]
        if not disc.empty:
            ax.axvline(disc["round"].iloc[0], color="gray", ls=":", lw=1.2, label="discovered density")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, pos: _percent(y / 100)))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, pos: ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("growth round")
        ax.set_ylabel("density of the layer (% of its weights, log scale)")
        seed = first["seed"]
        ax.set_title(f"{series_label(method, first['variant'])}, seed {seed}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if not methods:
        _no_data(axes[0], "growth rounds")
    fig.suptitle(f"Per-layer density over the growth rounds: {where}", fontsize=12)
    return fig


FIGURES = {
    "performance_density": plot_performance_density,
    "cost_density": plot_cost_density,
    "accuracy_cost": plot_accuracy_cost,
    "growth_timing": plot_growth_timing,
    "layer_density": plot_layer_density,
}
CAPTIONS = {
    "performance_density": "Test accuracy after full training against density (log scale), mean over seeds with a "
    "min-max band. Left: the growth mechanisms (paper Figure 4); right: PWMPR against IMP-C, RigL and PHEW "
    "(paper Figure 5). Stars mark each growth method's discovered density (hollow: growth stopped at a cap, "
    "not by the stopping rule). Dashed line: the dense network.",
    "cost_density": "Cumulative training cost of each point in units of one dense training run (trainer.epochs "
    "epochs of the dense model), against density. A growth method's point at density d costs its rounds up to d "
    "plus the full training at d; IMP-C's costs its dense training plus every pruning level down to d; PHEW and "
    "RigL train for a budget matched to PWMPR's cost at d.",
    "accuracy_cost": "Test accuracy against cumulative training cost; each point is one density of a method.",
    "growth_timing": "Growth timing (paper Figure 3): the batches trained before each growth decision, the "
    "validation (proxy) accuracy after each round's rough training, and the test accuracy after extensive "
    "training, one line per round-timing schedule.",
    "layer_density": "Density of each growable layer after every growth round for one run per growth method; "
    "dashed black: the whole network; dotted: the round whose density was discovered.",
}
