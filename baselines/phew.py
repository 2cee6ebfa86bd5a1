"""PHEW (Patil & Dovrolis 2021): data-free pruning at initialisation by random walks biased by
the magnitude of the initial weights (the walks: growth.seeds.phew), then training at that density.
"""

from __future__ import annotations

from growth.fixed import FixedDensityConfig, FixedDensityRun
from growth.masks import Masks
from growth.methods import register_method
from growth.seeds.phew import phew_masks

__all__ = ["PhewRun", "phew_masks"]


@register_method("phew", schema=FixedDensityConfig, family="fixed_density", label="PHEW (matched budget)",
                 short_label="PHEW", color="tab:pink", order=60, matched_budget=True)
class PhewRun(FixedDensityRun):
    """PHEW masks at `method.density` on the initial weights, then training."""

    def build_masks(self) -> Masks:
        return phew_masks(self.model, self.density_target, self.gens["grow"], self.ctx.example_input)
