"""Figures of the growth runs themselves: the round timing (paper Fig. 3) and each layer's
density over the rounds. Growth runs are those whose records say family ``growth``."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from analysis.aggregation import aggregate, band, band_note, select
from analysis.methods import headline_growth, method_info, of_family, ordered
from analysis.style import STYLES, label, log_density_axis, new_figure, no_data, percent, series_label


def timing_method(sel: pd.DataFrame, info=None) -> str | None:
    """The growth method whose timing is drawn: a headline one present, else the first growth method."""
    info = method_info(sel) if info is None else info
    present = set(sel["method"].dropna())
    growth = [m for m in of_family(info, "growth") if m in present]
    heads = [m for m in headline_growth(info) if m in growth]
    return (heads or growth or [None])[0]


def plot_growth_timing(table: pd.DataFrame, dataset: str | None = None, model: str | None = None,
                       method: str | None = None) -> Figure:
    """(a) batches before each growth decision, (b) validation accuracy after rough training,
    (c) test accuracy after extensive training; one line per round-timing schedule
    (growth.timing.mode / growth.timing.epochs of each run), for one growth method."""
    info = method_info(table)
    sel, where = select(table, dataset, model)
    method = method or timing_method(sel, info)
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
    seed_counts: list[int] = []
    for ax, data, value, scale, ylabel, title in panels:
        for i, timing in enumerate(timings):
            agg = aggregate(data[data["timing"] == timing], value)
            if agg.empty:
                continue
            ax.plot(agg["density"], scale * agg["mean"], STYLES[i % len(STYLES)], marker="o", ms=3,
                    color=f"C{i}", label=timing, gid=timing)
            seed_counts += [int(n) for n in agg["n"]]
            if (agg["n"] > 1).any():
                low, high = band(agg)
                ax.fill_between(agg["density"], scale * low, scale * high, color=f"C{i}", alpha=0.15, lw=0, gid=f"band|{timing}")
        log_density_axis(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        if value == "batches":
            ax.set_ylim(bottom=0)
        if not ax.lines:
            no_data(ax, "points")
        else:
            ax.legend(fontsize=8, loc="best")
    note = band_note(seed_counts)
    fig.suptitle(f"Growth timing: {label(info, method) if method else 'no growth runs'} on {where} "
                 f"(one line per round-timing schedule, mean over seeds" + (f"; {note})" if note else ")"), fontsize=12)
    return fig


def plot_layer_density(table: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> Figure:
    """Each layer's density over the growth rounds of one run per growth method (lowest seed)."""
    info = method_info(table)
    sel, where = select(table, dataset, model)
    rounds = sel[(sel["status"] == "finished") & (sel["phase"] == "growth round")]
    layer_cols = [c for c in sel.columns if c.startswith("layer_density:") and rounds[c].notna().any()]
    methods = ordered(info, rounds["method"].dropna().unique())
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
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, pos: percent(y / 100)))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, pos: ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("growth round")
        ax.set_ylabel("density of the layer (% of its weights, log scale)")
        ax.set_title(f"{series_label(info, method, first['variant'])}, seed {first['seed']}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if not methods:
        no_data(axes[0], "growth rounds")
    fig.suptitle(f"Per-layer density over the growth rounds: {where}", fontsize=12)
    return fig
