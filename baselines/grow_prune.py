"""Hybrid grow-prune, `method=grow_prune`: PWMPR up to its discovered density, the discovered
network trained with the full schedule, then IMP-C's pruning levels below it: prune
`prune_fraction` of the remaining weights by magnitude (global, or per layer) and continue
training `level_epochs` epochs, down to `min_density`. Growth stops at a density pruning can
still reduce; IMP-C pays for every level from dense, this pays growth up to the discovered
density and the levels below it. Every level is a curve point with its cumulative cost: growth up
to the discovered round + the discovered network's full training + the levels so far.

`method.prune_in_growth=p` (0: off) also prunes within growth: every growth step grows k edges
and then removes the round(p k) smallest-magnitude edges that were active before it (net growth
(1 - p) k > 0), so growth itself recycles weak edges.

Only the discovered snapshot is trained fully (`extensive.which` is not used): the levels start
from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from baselines.imp import PruningLevelsConfig, level_densities, level_epochs, magnitude_prune
from growth.config.checks import in_range, key
from growth.grow import GrowthMethodConfig, GrowthRun
from growth.masks import count_active, count_total, density
from growth.methods import register_method


@dataclass
class GrowPruneConfig(GrowthMethodConfig, PruningLevelsConfig):
    # Within growth: after growing k edges, remove round(prune_in_growth x k) of the smallest
    # magnitude among those active before the step. 0: growth only adds.
    prune_in_growth: float = key(0.0, in_range(0, 1, hi_open=True, valid="a fraction in [0, 1)"))


@register_method("grow_prune", schema=GrowPruneConfig, family="pruning", label="PWMPR + pruning", short_label="grow-prune",
                 color="magenta", order=45, grows=True)
class GrowPruneRun(GrowthRun):
    def extensive_queue(self) -> list[int]:
        return [self.state["discovered_round"]]

    def grow(self, n_new: int) -> tuple[int, int]:
        before = {n: m.clone() for n, m in self.masks.items()}
        grown, zero_filled = super().grow(n_new)
        drop = round(self.cfg.method.prune_in_growth * n_new)
        if drop:
            # The smallest-magnitude edges that were active before this step (the new ones are at 0).
            keep_old = count_active(before) - drop
            kept_old = magnitude_prune(self.model, before, keep_old, "global")
            self.set_masks({n: kept_old[n] | (self.masks[n] & ~before[n]) for n in self.masks})
        return grown, zero_filled

    def execute(self) -> None:
        super().execute()  # growth, then the discovered network's full training
        disc = self.state["discovered_round"]
        base = next(h for h in self.state["rounds"] if h["round"] == disc)
        # IMP-C's levels below the discovered density d: d (1-f), d (1-f)^2, ..., min_density.
        start = density(self.masks)
        levels = [start * t for t in level_densities(self.cfg.method.prune_fraction, self.cfg.method.min_density / start)[1:]] \
            if start > self.cfg.method.min_density else []
        for level, target in enumerate(levels, start=1):
            key = f"level:{level}"
            result = self.train_fixed(key, level_epochs(self.cfg), setup=lambda t=target: self.prune_to(t), label=f"level {level}")
            if not any(c.get("point") == key for c in self.state["curve"]):
                phases = [f"extensive:{disc}"] + [f"level:{i}" for i in range(1, level + 1)]
                self.add_curve_point({"point": key, "round": disc, "level": level, "density": density(self.masks), **result,
                                      **self.point_cost(phases, base=base)})
                self.ctx.progress(f"level {level}  density {100 * density(self.masks):.3f}%  test acc {result['test_accuracy']:.4f}")
                self.checkpoint()

    def prune_to(self, target: float) -> None:
        keep = max(1, math.floor(target * count_total(self.masks) + 0.5))
        self.masks = magnitude_prune(self.model, self.masks, keep, self.cfg.method.scope)

    def summary_fields(self) -> dict:
        fields = super().summary_fields()
        levels = [c for c in self.state["curve"] if c.get("level")]
        last = max(levels, key=lambda c: c["level"], default=None)
        fields["levels"] = len(levels)
        if last is not None:
            fields.update({"density": last["density"], "test_accuracy_pruned": last["test_accuracy"],
                           "cost_pruned": self.summary_cost(last)})
        return fields
