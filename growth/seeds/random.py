"""Random seed: every layer at the seed density, its edges drawn uniformly (seed builder `random`)."""

from __future__ import annotations

import torch
from torch import nn

from growth.kinds import SEED_BUILDERS
from growth.masks import Masks, growable_parameters
from growth.sampling import uniform_without_replacement


def random_seed_masks(model: nn.Module, density_: float, generator: torch.Generator) -> Masks:
    out = {}
    for n, p in growable_parameters(model).items():
        k = max(1, round(density_ * p.numel()))
        idx = uniform_without_replacement(p.numel(), k, generator, torch.device("cpu"))
        m = torch.zeros(p.numel(), dtype=torch.bool)
        m[idx] = True
        out[n] = m.view_as(p).to(p.device)
    return out


@SEED_BUILDERS.register("random")
def random_seed(model: nn.Module, density: float, generator: torch.Generator, example_input: torch.Tensor) -> Masks:
    return random_seed_masks(model, density, generator)
