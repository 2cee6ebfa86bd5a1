"""The fan-in rescale a sparse start applies to its surviving initial weights (growth seeds with
growth.seed_rescale=fan_in, fixed-density methods with method.rescale=fan_in)."""

from __future__ import annotations

import torch
from torch import nn

from growth.masks import Masks, growable_parameters


@torch.no_grad()
def rescale_fan_in(model: nn.Module, masks: Masks) -> None:
    """Scale each unit's surviving incoming weights by sqrt(fan_in / active fan_in), so a sparse
    seed's pre-activations keep the variance of the dense initialisation."""
    for n, p in growable_parameters(model).items():
        rows = masks[n].view(p.shape[0], -1)
        active = rows.sum(dim=1).to(p.dtype)
        factor = torch.where(active > 0, (rows.shape[1] / active.clamp(min=1)).sqrt(), torch.ones_like(active))
        p.mul_(factor.view(-1, *([1] * (p.dim() - 1))))
