"""The shuffled-mask ablation: `method=shuffled_masks method.file=<path>`.

The mask of `method.file` (as for `method=masks`: a masks file, a growth run's snapshot, a PHEW
or RigL mask) with its edges shuffled uniformly within each layer, so every layer keeps its
density and only the topology inside it is lost; then trained from this run's own
initialisation on the fixed-density budget. Against `method=masks` on the same file and budget,
it tests whether the found topology matters or only how density is spread over the layers. The
shuffle draws from the run's seeded growth stream: the same seed gives the same shuffled mask.
"""

from __future__ import annotations

import torch

from baselines.masks_file import MasksFileConfig, MasksFileRun, masks_problems
from growth.masks import Masks
from growth.methods import register_method
from growth.sampling import uniform_without_replacement


def shuffle_within_layers(masks: Masks, generator: torch.Generator) -> Masks:
    """Every layer's mask with as many edges, at uniformly drawn positions."""
    out = {}
    for name, mask in masks.items():
        flat = torch.zeros(mask.numel(), dtype=torch.bool)
        flat[uniform_without_replacement(mask.numel(), int(mask.sum()), generator, torch.device("cpu"))] = True
        out[name] = flat.view(mask.shape).to(mask.device)
    return out


@register_method("shuffled_masks", schema=MasksFileConfig, validate=masks_problems, family="fixed_density",
                 label="shuffled masks", short_label="shuffled", color="navy", order=75, matched_budget=True)
class ShuffledMasksRun(MasksFileRun):
    def build_masks(self) -> Masks:
        given = super().build_masks()
        self.ctx.progress("edges shuffled within each layer (every layer's density kept)")
        return shuffle_within_layers(given, self.gens["grow"])
