"""The report's figures, by key, with their captions; and the figure functions themselves
(drawn in :mod:`analysis.figures` and :mod:`analysis.figures_growth`, styled by
:mod:`analysis.style`, from the statistics of :mod:`analysis.aggregation`). Every function
returns a matplotlib ``Figure`` (Agg canvas, no pyplot state) whose data can be read back;
:func:`save` writes it as PNG and PDF."""

from __future__ import annotations

from analysis.aggregation import aggregate, band, curve_points, dense_reference, discovered_points, select, series_keys
from analysis.figures import plot_accuracy_cost, plot_cost_density, plot_performance_density
from analysis.figures_growth import plot_growth_timing, plot_layer_density, timing_method
from analysis.style import new_figure, save, series_colors, series_label

__all__ = [
    "FIGURES", "CAPTIONS", "plot_performance_density", "plot_cost_density", "plot_accuracy_cost", "plot_growth_timing",
    "plot_layer_density", "timing_method", "curve_points", "discovered_points", "dense_reference", "aggregate", "band", "select",
    "series_keys", "series_colors", "series_label", "new_figure", "save",
]

FIGURES = {
    "performance_density": plot_performance_density,
    "cost_density": plot_cost_density,
    "accuracy_cost": plot_accuracy_cost,
    "growth_timing": plot_growth_timing,
    "layer_density": plot_layer_density,
}
CAPTIONS = {
    "performance_density": "Test accuracy after full training against density (log scale), mean over seeds; the "
    "band is the 95% bootstrap confidence interval of the mean where a point has 3 seeds or more, the min-max range "
    "where it has 2, and absent with 1. Left: every growth method (paper Figure 4); right: the headline growth method against every "
    "pruning and fixed-density method (paper Figure 5). Stars mark each growth method's discovered density "
    "(hollow: growth stopped at a cap, not by the stopping rule). Dashed line: the dense network.",
    "cost_density": "Cumulative training cost of each point in units of one dense training run (trainer.epochs "
    "epochs of the dense model), against density. A growth method's point at density d costs its rounds up to d "
    "plus the full training at d; a pruning method's costs its dense training plus every pruning level down to d; "
    "fixed-density methods train for their own budget (a matched budget: the headline method's cost at d). "
    "Mean over seeds, banded as in the performance-density figure.",
    "accuracy_cost": "Test accuracy against cumulative training cost; each point is one density of a method.",
    "growth_timing": "Growth timing (paper Figure 3): the batches trained before each growth decision, the "
    "validation (proxy) accuracy after each round's rough training, and the test accuracy after extensive "
    "training, one line per round-timing schedule (mean over seeds, banded as in the performance-density figure).",
    "layer_density": "Density of each growable layer after every growth round for one run per growth method; "
    "dashed black: the whole network; dotted: the round whose density was discovered.",
}
