"""GraSP (Wang et al. 2020): prune at initialisation so as to preserve the gradient flow. The
score of a weight is w * (H g), H the Hessian and g the gradient of the loss on a few training
batches (logits divided by a temperature of 200, as the paper's code does); removing the weights
with the largest -w * (H g) reduces the gradient norm least, so the `method.density` fraction with
the largest w * (H g) is kept, over all layers at once (the paper's global threshold;
`method.scope=layer` per layer). Then training at that density from the initial weights.

As in the paper's code (and the SynFlow authors' copy of it): g is summed over the scoring batches
without a graph, then every batch's gradient is taken again with its graph and the product
g . grad backpropagated, giving H g. Cost charged: 3 f_D per sample for g, and 6 f_D per sample
for the Hessian-gradient product (a forward and backward pass, and the backward pass of that).
"""

from __future__ import annotations

import torch

from baselines.snip import PruneAtInitConfig, scoring_batches
from growth.fixed import FixedDensityRun
from growth.masks import Masks, growable_parameters, masks_keeping_highest
from growth.methods import register_method

TEMPERATURE = 200.0


@register_method("grasp", schema=PruneAtInitConfig, family="fixed_density", label="GraSP (matched budget)",
                 short_label="GraSP", color="gold", order=64, matched_budget=True)
class GraspRun(FixedDensityRun):
    def build_masks(self) -> Masks:
        model, engine = self.model, self.engine
        params = growable_parameters(model)
        weights = list(params.values())
        model.train()
        model.zero_grad(set_to_none=True)
        batches = list(scoring_batches(self, self.cfg.method.samples_per_class * self.ctx.data.num_classes))
        samples = sum(len(y) for _, y in batches)
        stopped = [torch.zeros_like(w) for w in weights]
        for x, y in batches:
            loss = engine.loss_fn(model(engine.format_input(x)) / TEMPERATURE, y)
            for s, g in zip(stopped, torch.autograd.grad(loss, weights)):
                s += g
        for x, y in batches:
            loss = engine.loss_fn(model(engine.format_input(x)) / TEMPERATURE, y)
            grads = torch.autograd.grad(loss, weights, create_graph=True)
            sum((s * g).sum() for s, g in zip(stopped, grads)).backward()  # accumulates H g in .grad
        self.ledger.add_extra_flops(9.0 * self.ledger.dense_forward_flops * samples)
        scores = {n: (p.grad.detach() * p.detach()).double() for n, p in params.items()}
        model.zero_grad(set_to_none=True)
        return masks_keeping_highest(scores, self.density_target, self.cfg.method.scope)
