"""SNIP (Lee et al. 2019): prune at initialisation by connection sensitivity |g * w|, the
gradient of the loss on a few training batches times the weight, keeping the `method.density`
fraction with the largest scores over all layers at once (the paper's global threshold;
`method.scope=layer` per layer), then training at that density from the initial weights.

As in the SynFlow authors' reference implementation of SNIP: the gradient is summed over
batches of the training stream holding at least `method.samples_per_class` x classes samples
(10 per class there), in train mode. Its cost, one dense forward and backward pass per sample
(3 f_D), is charged to the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growth.config.checks import at_least, key, one_of
from growth.fixed import FixedDensityConfig, FixedDensityRun
from growth.masks import Masks, growable_parameters, masks_keeping_highest
from growth.methods import register_method


@dataclass
class PruneAtInitConfig(FixedDensityConfig):
    # global: one threshold over all layers (SNIP's, GraSP's and SynFlow's papers); layer: per layer.
    scope: str = key("global", one_of("global", "layer"))
    # Training samples whose loss scores the edges: at least this many per class (whole batches).
    samples_per_class: int = key(10, at_least(1))


def scoring_batches(run, samples: int):
    """Whole training batches of the run's stream until at least `samples` samples."""
    seen = 0
    for x, y in run.engine.batches:
        yield x, y
        seen += len(y)
        if seen >= samples:
            return


@register_method("snip", schema=PruneAtInitConfig, family="fixed_density", label="SNIP (matched budget)",
                 short_label="SNIP", color="tab:gray", order=62, matched_budget=True)
class SnipRun(FixedDensityRun):
    def build_masks(self) -> Masks:
        model, engine = self.model, self.engine
        params = growable_parameters(model)
        model.train()
        model.zero_grad(set_to_none=True)
        samples = 0
        for x, y in scoring_batches(self, self.cfg.method.samples_per_class * self.ctx.data.num_classes):
            loss = engine.loss_fn(model(engine.format_input(x)), y)
            loss.backward()  # gradients accumulate over the batches
            samples += len(y)
        self.ledger.add_extra_flops(3.0 * self.ledger.dense_forward_flops * samples)
        scores = {n: (p.grad.detach() * p.detach()).abs().double() for n, p in params.items()}
        model.zero_grad(set_to_none=True)
        return masks_keeping_highest(scores, self.density_target, self.cfg.method.scope)
