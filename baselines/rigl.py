"""RigL (Evci et al. 2020): fixed density; every `delta_t` steps drop the smallest-magnitude
active weights and grow the same number of absent ones with the largest dense-gradient
magnitude, per layer, with a drop fraction decayed by a cosine until `t_end` of training.
Grown weights start at 0 with zero optimizer state; they are not updated on the step that grows
them. The dense gradient is read only on update steps, and its extra cost (a dense instead of
sparse backward pass, 2x the forward FLOPs difference per sample) is added to the ledger there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from growth.config.checks import at_least, fraction as a_fraction, in_range, key, one_of
from growth.fixed import FixedDensityConfig, FixedDensityRun
from growth.masks import Masks, growable_parameters
from growth.methods import register_method
from growth.sampling import uniform_without_replacement
from growth.train import Callback


def erk_densities(shapes: dict[str, tuple[int, ...]], target: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel layer densities: proportional to sum(shape) / prod(shape), scaled so
    the overall density is `target`; layers that would exceed 1 are made dense."""
    dense: set[str] = set()
    while True:
        rhs, divisor, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            numel = math.prod(shape)
            if name in dense:
                rhs -= numel * (1.0 - target)
            else:
                rhs += numel * target
                raw[name] = sum(shape) / numel
                divisor += raw[name] * numel
        if not raw:
            return {n: 1.0 for n in shapes}
        eps = rhs / divisor
        biggest = max(raw.values())
        if biggest * eps <= 1.0:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.update(n for n, r in raw.items() if r == biggest)


def random_layer_masks(model, layer_density: dict[str, float], generator: torch.Generator) -> Masks:
    out = {}
    for name, p in growable_parameters(model).items():
        k = min(p.numel(), max(1, round(layer_density[name] * p.numel())))
        m = torch.zeros(p.numel(), dtype=torch.bool)
        m[uniform_without_replacement(p.numel(), k, generator, torch.device("cpu"))] = True
        out[name] = m.view_as(p).to(p.device)
    return out


@dataclass
class MaskUpdate:
    """What one mask update decided: the new masks, edges changed per layer in total, its FLOPs."""

    masks: Masks
    changed: int
    flops: float


@torch.no_grad()
def rigl_update(model, masks: Masks, fraction: float) -> MaskUpdate:
    """Per layer, drop the `fraction` of active weights with the smallest magnitude and grow as
    many absent ones with the largest dense-gradient magnitude. Grown edges' gradients are zeroed,
    so they start at 0 and stay there on this step. FLOPs are left to the caller (flops=0)."""
    params = growable_parameters(model)
    new_masks, changed = {}, 0
    for name, mask in masks.items():
        p = params[name]
        flat_mask = mask.flatten()
        k = int(fraction * int(flat_mask.sum()))
        k = min(k, int((~flat_mask).sum()))
        if k == 0:
            new_masks[name] = mask
            continue
        magnitude = torch.where(flat_mask, p.detach().abs().flatten(), torch.full_like(p.flatten(), math.inf))
        drop = torch.topk(magnitude, k, largest=False).indices
        grad = torch.where(~flat_mask, p.grad.abs().flatten(), torch.full_like(p.flatten(), -math.inf))
        grow = torch.topk(grad, k).indices  # among edges absent before the drop: disjoint sets
        new = flat_mask.clone()
        new[drop] = False
        new[grow] = True
        # (masked_fill_ rather than a flat view: a channels-last gradient has no flat view in logical order)
        grown = torch.zeros_like(flat_mask)
        grown[grow] = True
        p.grad.masked_fill_(grown.view_as(mask), 0)
        new_masks[name] = new.view_as(mask)
        changed += k
    return MaskUpdate(new_masks, changed, 0.0)


class RiglUpdater(Callback):
    """RigL's schedule: an update every `delta_t` steps until `t_end` of training, its drop
    fraction decayed by a cosine. The run applies what each update returns."""

    def __init__(self, run: "RiglRun", total_steps: int):
        self.run = run
        m = run.cfg.method
        self.delta_t, self.alpha = m.delta_t, m.drop_fraction
        self.end_step = int(m.t_end * total_steps)

    def drop_fraction(self, step: int) -> float:
        return self.alpha / 2.0 * (1.0 + math.cos(math.pi * step / max(self.end_step, 1)))

    def after_backward(self, engine) -> None:
        step = self.run.state["rigl_step"]
        if step == 0 or step % self.delta_t or step >= self.end_step:
            return
        fraction = self.drop_fraction(step)
        update = rigl_update(engine.model, self.run.masks, fraction)
        # The dense gradient of this step's batch instead of the sparse one: a dense backward pass.
        ledger = self.run.ledger
        sparse_forward = ledger.train_flops_per_sample / 3.0
        update.flops = 2.0 * (ledger.dense_forward_flops - sparse_forward) * self.run.cfg.trainer.batch_size
        self.run.apply_update(step, fraction, update)

    def after_step(self, engine) -> None:
        self.run.count_step()


@dataclass
class RiglConfig(FixedDensityConfig):
    # erk: Erdos-Renyi-Kernel layer densities; uniform: every layer at `density`.
    distribution: str = key("erk", one_of("erk", "uniform"))
    delta_t: int = key(100, at_least(1, "at least 1 step"))  # optimizer steps between mask updates
    # At the first update, decayed by a cosine to 0 at t_end.
    drop_fraction: float = key(0.3, a_fraction(lo_open=False))
    # Fraction of training after which the mask is frozen.
    t_end: float = key(0.75, in_range(0, 1, lo_open=True, valid="a fraction of training in (0, 1]"))


@register_method("rigl", schema=RiglConfig, family="fixed_density", label="RigL (matched budget)", short_label="RigL",
                 color="tab:brown", order=50, matched_budget=True)
class RiglRun(FixedDensityRun):
    def build_masks(self) -> Masks:
        shapes = {n: tuple(p.shape) for n, p in growable_parameters(self.model).items()}
        target = self.density_target
        layer = erk_densities(shapes, target) if self.cfg.method.distribution == "erk" else {n: target for n in shapes}
        return random_layer_masks(self.model, layer, self.gens["grow"])

    def initial_state(self) -> dict:
        return {**super().initial_state(), "rigl_step": 0, "rigl_updates": []}

    def callbacks(self, epochs: int) -> list:
        return [RiglUpdater(self, epochs * len(self.engine.batches))]

    def apply_update(self, step: int, fraction: float, update: MaskUpdate) -> None:
        self.set_masks(update.masks)
        self.ledger.add_extra_flops(update.flops)
        self.state["rigl_updates"].append({"step": step, "drop_fraction": fraction, "changed": update.changed})

    def count_step(self) -> None:
        self.state["rigl_step"] += 1

    def summary_fields(self) -> dict:
        return {**super().summary_fields(), "rigl_updates": len(self.state["rigl_updates"])}
