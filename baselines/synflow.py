"""SynFlow (Tanaka et al. 2020): data-free iterative pruning at initialisation. The score of a
weight is |w * dR/dw|, R = 1^T (prod_l |W_l|) 1 the network's output on an all-ones input with
every weight replaced by its magnitude; `method.iterations` rounds (100 in the paper) each score
the network masked so far and keep the highest scores over all layers at the round's density,
which falls exponentially from 1 to `method.density` (density^((t + 1) / T), the paper's
schedule). The computation is PWMP's (growth.scores.pwmp: float64, so path products do not
overflow; one forward and backward pass): |w| * dR/dw is SynFlow's score and its PWMP is dR/dw.

Departures from the authors' code, both from PWMP's pass: biases and normalisation shifts are 0
(paths start at the inputs only, as in the paper's R), and max pooling is read as average
pooling. Cost: one sample's dense forward and backward pass per round (3 f_D), charged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growth.config.checks import at_least, key, one_of
from growth.fixed import FixedDensityConfig, FixedDensityRun
from growth.masks import Masks, dense_masks, growable_parameters, masks_keeping_highest
from growth.methods import register_method
from growth.scores.pwmp import pwmp_scores


@dataclass
class SynflowConfig(FixedDensityConfig):
    iterations: int = key(100, at_least(1))
    # exponential: density^((t+1)/T) (the paper's); linear: 1 - (1 - density) (t+1)/T.
    schedule: str = key("exponential", one_of("exponential", "linear"))
    # global: one threshold over all layers (the paper's); layer: per layer.
    scope: str = key("global", one_of("global", "layer"))


def round_density(final: float, t: int, rounds: int, schedule: str) -> float:
    if schedule == "exponential":
        return final ** ((t + 1) / rounds)
    return 1.0 - (1.0 - final) * (t + 1) / rounds


@register_method("synflow", schema=SynflowConfig, family="fixed_density", label="SynFlow (matched budget)",
                 short_label="SynFlow", color="tab:cyan", order=66, matched_budget=True)
class SynflowRun(FixedDensityRun):
    def build_masks(self) -> Masks:
        m = self.cfg.method
        masks = dense_masks(self.model)
        params = growable_parameters(self.model)
        for t in range(m.iterations):
            paths = pwmp_scores(self.model, masks, self.ctx.example_input)
            # pruned edges score -1: never kept again, even where kept edges score 0 (dead paths)
            scores = {n: torch.where(masks[n], paths[n] * params[n].detach().abs().double(), -1.0) for n in masks}
            masks = masks_keeping_highest(scores, round_density(self.density_target, t, m.iterations, m.schedule), m.scope)
            self.ledger.add_extra_flops(3.0 * self.ledger.dense_forward_flops)
        return masks
