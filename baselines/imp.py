"""IMP-C: iterative magnitude pruning with continued training.

Train dense with the full schedule; then, level by level, prune `prune_fraction` of the remaining
weights by magnitude (one global threshold, or per layer) and continue training
`level_epochs` epochs (default a quarter of the schedule), down to `min_density`. Options rewind
the surviving weights to their initial values or to an early epoch of the dense training
instead of continuing. Every level is a point of the curve, with the cumulative cost up to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from growth import distributed, records
from growth.config import MethodConfig
from growth.config.checks import at_least, fraction, key, one_of
from growth.masks import Masks, count_total, dense_masks, density, growable_parameters
from growth.methods import MethodRun, register_method
from growth.train import Callback


def level_densities(prune_fraction: float, min_density: float) -> list[float]:
    """1, (1-f), (1-f)^2, ... and finally exactly min_density."""
    out = [1.0]
    while out[-1] > min_density:
        out.append(max(out[-1] * (1.0 - prune_fraction), min_density))
    return out


def magnitude_prune(model, masks: Masks, keep: int, scope: str) -> Masks:
    """Keep the `keep` largest-magnitude present weights (globally, or in proportion per layer)."""
    params = growable_parameters(model)
    if scope == "layer":
        total = count_total(masks)
        out = {}
        for n, m in masks.items():
            k = max(1, round(keep * m.numel() / total))
            out[n] = _keep_largest(params[n].detach().abs().flatten(), m.flatten(), k).view_as(m)
        return out
    names = list(masks)
    magnitude = torch.cat([params[n].detach().abs().flatten() for n in names])
    present = torch.cat([masks[n].flatten() for n in names])
    kept = _keep_largest(magnitude, present, keep)
    out, offset = {}, 0
    for n in names:
        out[n] = kept[offset : offset + masks[n].numel()].view_as(masks[n])
        offset += masks[n].numel()
    return out


def _keep_largest(magnitude: torch.Tensor, present: torch.Tensor, k: int) -> torch.Tensor:
    score = torch.where(present, magnitude, torch.full_like(magnitude, -1.0))
    k = min(k, int(present.sum()))
    out = torch.zeros_like(present)
    out[torch.topk(score, k).indices] = True
    return out


class RewindCapture(Callback):
    """Saves the weights after `rewind_epoch` epochs of the dense training."""

    def __init__(self, run: "ImpRun"):
        self.run = run

    def end_of_epoch(self, engine) -> None:
        done = self.run.state["progress"]["level:0"]["epoch"] + 1
        if done == self.run.cfg.method.rewind_epoch:
            records.atomic_torch_save(
                {n: t.cpu() for n, t in engine.model.state_dict().items()}, self.run.run_dir / "snapshots" / "rewind.pt"
            )


@dataclass
class PruningLevelsConfig:
    """The levels of magnitude pruning with continued training (IMP-C's, and grow-prune's below
    its discovered density)."""

    prune_fraction: float = key(0.2, fraction())  # of the remaining weights, per level
    min_density: float = key(0.01, fraction(what="a density"))
    # Epochs of training after each pruning; null means a quarter of trainer.epochs.
    level_epochs: Optional[int] = key(None, at_least(1, "null or at least 1 epoch", nullable=True))
    # global: one magnitude threshold over all layers; layer: prune each layer by the fraction.
    scope: str = key("global", one_of("global", "layer"))


def level_epochs(cfg) -> int:
    """Epochs of training after each pruning level: method.level_epochs, or a quarter of trainer.epochs."""
    m = cfg.method
    return m.level_epochs if m.level_epochs is not None else max(1, cfg.trainer.epochs // 4)


@dataclass
class ImpConfig(MethodConfig, PruningLevelsConfig):
    # none: continue from the pruned weights (IMP-C); init: rewind to the initial weights;
    # epoch: rewind to the weights after `rewind_epoch` epochs of the dense training.
    rewind: str = key("none", one_of("none", "init", "epoch"))
    rewind_epoch: int = key(1, at_least(0))


@register_method("imp_c", schema=ImpConfig, family="pruning", label="IMP-C", color="tab:purple", order=40)
class ImpRun(MethodRun):
    def initial_state(self) -> dict:
        self.masks = dense_masks(self.model)
        return {}

    def execute(self) -> None:
        m = self.cfg.method
        targets = level_densities(m.prune_fraction, m.min_density)
        if m.rewind == "epoch" and m.rewind_epoch == 0 and distributed.is_writer():
            import shutil

            shutil.copyfile(self.run_dir / "snapshots" / "init.pt", self.run_dir / "snapshots" / "rewind.pt")
        for level, target in enumerate(targets):
            key = f"level:{level}"
            if level == 0:
                callbacks = [RewindCapture(self)] if m.rewind == "epoch" else []
                result = self.train_fixed(key, self.cfg.trainer.epochs, callbacks=callbacks, label="dense")
            else:
                result = self.train_fixed(key, level_epochs(self.cfg), setup=lambda t=target: self.prune_to(t), label=f"level {level}")
            if not any(c.get("point") == key for c in self.state["curve"]):
                phases = [f"level:{i}" for i in range(level + 1)]
                self.add_curve_point({"point": key, "level": level, "density": density(self.masks), **result, **self.point_cost(phases)})
                self.ctx.progress(f"IMP level {level}  density {100 * density(self.masks):.3f}%  test acc {result['test_accuracy']:.4f}")
                self.checkpoint()

    def prune_to(self, target: float) -> None:
        m = self.cfg.method
        keep = max(1, math.floor(target * count_total(self.masks) + 0.5))
        masks = magnitude_prune(self.model, self.masks, keep, m.scope)
        if m.rewind in ("init", "epoch"):
            name = "init.pt" if m.rewind == "init" else "rewind.pt"
            distributed.barrier()  # written by rank 0, read by every rank
            self.model.load_state_dict(torch.load(self.run_dir / "snapshots" / name, map_location="cpu", weights_only=True))
        self.masks = masks

    def summary_fields(self) -> dict:
        last = max(self.state["curve"], key=lambda c: c["level"], default=None)
        return {
            "density": last["density"] if last else None,
            "test_accuracy": last["test_accuracy"] if last else None,
            "levels": len(self.state["curve"]),
            "cost": self.summary_cost(last),
        }
