"""Sparse starting masks, for the growth loop and the fixed-density methods alike.

A seed builder is registered on ``growth.kinds.SEED_BUILDERS`` in its own module of this package
as ``builder(model, density, generator, example_input) -> Masks`` (the masks on each weight's
device; every random draw from `generator`); ``growth.seed_builder`` names one.
"""

from __future__ import annotations

import torch
from torch import nn

from growth.kinds import SEED_BUILDERS
from growth.masks import Masks
from growth.seeds.phew import phew_masks
from growth.seeds.random import random_seed_masks
from growth.seeds.rescale import rescale_fan_in

__all__ = ["build_seed", "phew_masks", "random_seed_masks", "rescale_fan_in"]


def build_seed(name: str, model: nn.Module, density: float, generator: torch.Generator, example_input: torch.Tensor) -> Masks:
    return SEED_BUILDERS.get(name)(model, density, generator, example_input)
