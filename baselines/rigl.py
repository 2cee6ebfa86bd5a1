"""RigL (Evci et al. 2020): fixed density; every `delta_t` steps drop the smallest-magnitude
active weights and grow the same number of connections with the largest dense-gradient
magnitude among all those not active after the drop (Algorithm 1: a connection dropped in this
update may be regrown), per layer, with a drop fraction decayed by a cosine until `t_end` of
training. Grown weights, regrown ones included, start at 0 with zero optimizer state and are not
updated on the step that grows them (Algorithm 1's set semantics; RigL's reference code keeps a
regrown connection's old value instead, a weight of the smallest magnitude in its layer). The
dense gradient is read only on update steps; its extra cost follows the paper's appendix: an
update step costs 2 f_S + f_D per sample instead of 3 f_S, so (f_D - f_S) per sample is added.

SET (Mocanu et al. 2018), as RigL's code implements it: the same schedule and magnitude drop,
growth uniformly at random among the connections not active after the drop; no dense gradient,
so no extra cost. New weights start at 0 (RigL's code's default `grow_init=zeros`; SET's paper
draws them at random).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from growth.config.checks import at_least, fraction as a_fraction, in_range, key, one_of
from growth.errors import ConfigError
from growth.fixed import FixedDensityConfig, FixedDensityRun
from growth.masks import Masks, growable_parameters
from growth.methods import register_method
from growth.sampling import uniform_without_replacement
from growth.train import Callback


def erk_densities(shapes: dict[str, tuple[int, ...]], target: float, dense: set[str] = frozenset()) -> dict[str, float]:
    """Erdos-Renyi-Kernel layer densities: proportional to sum(shape) / prod(shape), scaled so
    the overall density is `target`; the layers in `dense`, and those that would exceed 1, are
    dense (the others then share what is left)."""
    dense = set(dense)
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
    """What one mask update decided: the new masks, edges changed per layer in total, its FLOPs,
    and per layer the connections grown (regrown ones included), whose optimizer state restarts."""

    masks: Masks
    changed: int
    flops: float
    grown: Masks | None = None


@torch.no_grad()
def rigl_update(model, masks: Masks, fraction: float, grow_by: str = "gradient",
                generator: torch.Generator | None = None) -> MaskUpdate:
    """Per layer, drop the `fraction` of active weights with the smallest magnitude and grow as
    many among the connections not active after the drop: those with the largest dense-gradient
    magnitude (`grow_by="gradient"`, RigL) or uniformly at random (`"random"`, SET, drawn from
    `generator`). Grown connections' weights and gradients are zeroed, so they start at 0 and stay
    there on this step. FLOPs are left to the caller (flops=0)."""
    params = growable_parameters(model)
    new_masks, grown_masks, changed = {}, {}, 0
    for name, mask in masks.items():
        p = params[name]
        flat_mask = mask.flatten()
        k = int(fraction * int(flat_mask.sum()))
        if k == 0:
            new_masks[name] = mask
            continue
        magnitude = torch.where(flat_mask, p.detach().abs().flatten(), torch.full_like(p.flatten(), math.inf))
        drop = torch.topk(magnitude, k, largest=False).indices
        kept = flat_mask.clone()
        kept[drop] = False
        candidates = (~kept).nonzero().flatten()  # the absent and the just dropped: at least k
        if grow_by == "gradient":
            grad = p.grad.abs().flatten()[candidates]
            grow = candidates[torch.topk(grad, k).indices]
        else:
            grow = candidates[uniform_without_replacement(candidates.numel(), k, generator, torch.device("cpu")).to(candidates.device)]
        new = kept.clone()
        new[grow] = True
        # (masked_fill_ rather than a flat view: a channels-last tensor has no flat view in logical order)
        grown = torch.zeros_like(flat_mask)
        grown[grow] = True
        grown = grown.view_as(mask)
        p.masked_fill_(grown, 0)
        if p.grad is not None:
            p.grad.masked_fill_(grown, 0)
        new_masks[name], grown_masks[name] = new.view_as(mask), grown
        changed += int((new & ~flat_mask).sum())
    return MaskUpdate(new_masks, changed, 0.0, grown_masks)


def restart_optimizer_state(optimizer: torch.optim.Optimizer, model, grown: Masks) -> None:
    """Zero every optimizer-state tensor (momentum, Adam moments) of the grown connections."""
    params = dict(model.named_parameters())
    for name, where in grown.items():
        for value in optimizer.state.get(params[name], {}).values():
            if torch.is_tensor(value) and value.shape == where.shape:
                value.masked_fill_(where, 0)


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
        grow_by = self.run.grow_by
        update = rigl_update(engine.model, self.run.masks, fraction, grow_by, self.run.gens["grow"])
        if grow_by == "gradient":
            # The paper's appendix: an update step costs 2 f_S + f_D per sample (the dense gradient
            # of this batch) instead of 3 f_S.
            ledger = self.run.ledger
            sparse_forward = ledger.train_flops_per_sample / 3.0
            update.flops = (ledger.dense_forward_flops - sparse_forward) * self.run.cfg.trainer.batch_size
        self.run.apply_update(step, fraction, update)

    def after_step(self, engine) -> None:
        self.run.count_step()


def _dense_first_problem(first_share: float, target: float) -> str | None:
    if first_share <= target:
        return None
    return (f"method.dense_first_layer=true needs method.density >= {first_share:.4g}: the first layer alone holds "
            f"that fraction of the growable weights (method.density={target:.4g})")


def rigl_problems(cfg) -> list[str]:
    """A dense first layer must fit in the density asked (the model built on the meta device)."""
    m = cfg.method
    if not m.dense_first_layer or cfg.budget.snapshot is not None:
        return []
    from growth.models import build_on_meta

    try:
        model = build_on_meta(cfg.model, cfg.dataset)
    except Exception:  # a model that does not build: its own check says why
        return []
    if model is None:
        return []
    sizes = [p.numel() for p in growable_parameters(model).values()]
    problem = _dense_first_problem(sizes[0] / sum(sizes), float(m.density)) if sizes else None
    return [problem] if problem else []


@dataclass
class RiglConfig(FixedDensityConfig):
    # erk: Erdos-Renyi-Kernel layer densities; uniform: every layer at `density`.
    distribution: str = key("erk", one_of("erk", "uniform"))
    delta_t: int = key(100, at_least(1, "at least 1 step"))  # optimizer steps between mask updates
    # At the first update, decayed by a cosine to 0 at t_end.
    drop_fraction: float = key(0.3, a_fraction(lo_open=False))
    # Fraction of training after which the mask is frozen.
    t_end: float = key(0.75, in_range(0, 1, lo_open=True, valid="a fraction of training in (0, 1]"))
    # The first growable layer kept dense, the others sharing the rest of the budget (RigL's
    # ImageNet code does this with ERK).
    dense_first_layer: bool = False


@register_method("rigl", schema=RiglConfig, validate=rigl_problems, family="fixed_density", label="RigL (matched budget)", short_label="RigL",
                 color="tab:brown", order=50, matched_budget=True)
class RiglRun(FixedDensityRun):
    grow_by = "gradient"

    def build_masks(self) -> Masks:
        shapes = {n: tuple(p.shape) for n, p in growable_parameters(self.model).items()}
        target = self.density_target
        dense = {next(iter(shapes))} if self.cfg.method.dense_first_layer and shapes else set()
        if dense:
            first, total = math.prod(shapes[next(iter(dense))]), sum(math.prod(s) for s in shapes.values())
            problem = _dense_first_problem(first / total, target)
            if problem:
                raise ConfigError(problem)
        if self.cfg.method.distribution == "erk":
            layer = erk_densities(shapes, target, dense)
        elif dense:  # uniform over the other layers
            rest = (target * total - first) / (total - first) if total > first else 1.0
            layer = {n: 1.0 if n in dense else rest for n in shapes}
        else:
            layer = {n: target for n in shapes}
        return random_layer_masks(self.model, layer, self.gens["grow"])

    def initial_state(self) -> dict:
        return {**super().initial_state(), "rigl_step": 0, "rigl_updates": []}

    def callbacks(self, epochs: int) -> list:
        return [RiglUpdater(self, epochs * len(self.engine.batches))]

    def apply_update(self, step: int, fraction: float, update: MaskUpdate) -> None:
        self.set_masks(update.masks)
        if update.grown:
            restart_optimizer_state(self.optimizer, self.model, update.grown)
        self.ledger.add_extra_flops(update.flops)
        self.state["rigl_updates"].append({"step": step, "drop_fraction": fraction, "changed": update.changed})

    def count_step(self) -> None:
        self.state["rigl_step"] += 1

    def summary_fields(self) -> dict:
        return {**super().summary_fields(), "rigl_updates": len(self.state["rigl_updates"])}


@register_method("set", schema=RiglConfig, validate=rigl_problems, family="fixed_density", label="SET (matched budget)", short_label="SET",
                 color="darkcyan", order=55, matched_budget=True)
class SetRun(RiglRun):
    grow_by = "random"
