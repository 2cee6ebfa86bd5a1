"""The cost ledger: optimizer steps, samples, epochs in dense-run units, FLOPs and seconds.

Training FLOPs per sample are forward + backward = 3x the forward FLOPs, counted per growable
layer with torch's FlopCounterMode on the dense model and scaled by that layer's density;
everything else in the forward pass (other layers, norms) is counted dense. Extra passes that a
method makes outside the training step (scoring, dense gradients) are added explicitly.
Evaluation passes are not training cost and are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

COUNTERS = ("steps", "samples", "flops", "extra_flops", "seconds")


def forward_flops_per_sample(model: nn.Module, example_input: torch.Tensor, growable: list[str]) -> tuple[dict[str, float], float]:
    """(dense forward FLOPs per sample of each growable weight's layer, FLOPs of everything else)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input[:1])
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    prefix = type(model).__name__
    layer = {}
    for name in growable:
        module_name = name.rsplit(".", 1)[0] if "." in name else ""
        key = f"{prefix}.{module_name}" if module_name else prefix
        layer[name] = float(sum(counts.get(key, {}).values()))
    total = float(counter.get_total_flops())
    return layer, max(total - sum(layer.values()), 0.0)


class CostLedger:
    """Counters per phase ('growth', 'extensive', ...); cumulative figures are sums over phases."""

    def __init__(self, train_size: int, full_epochs: int, layer_flops: Mapping[str, float], other_flops: float):
        self.train_size = int(train_size)
        self.full_epochs = int(full_epochs)
        self.layer_flops = dict(layer_flops)
        self.other_flops = float(other_flops)
        self.phases: dict[str, dict[str, float]] = {}
        self.phase = "growth"
        self.budget: dict[str, float] = {}
        self._train_flops_per_sample = 3.0 * (sum(self.layer_flops.values()) + self.other_flops)

    @property
    def train_flops_per_sample(self) -> float:
        """Training FLOPs of one sample at the current layer densities."""
        return self._train_flops_per_sample

    @property
    def dense_forward_flops(self) -> float:
        return sum(self.layer_flops.values()) + self.other_flops

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.phases.setdefault(phase, dict.fromkeys(COUNTERS, 0.0))

    def set_densities(self, layer_densities: Mapping[str, float]) -> None:
        fwd = self.other_flops + sum(f * float(layer_densities.get(n, 1.0)) for n, f in self.layer_flops.items())
        self._train_flops_per_sample = 3.0 * fwd

    def _current(self) -> dict[str, float]:
        return self.phases.setdefault(self.phase, dict.fromkeys(COUNTERS, 0.0))

    def count_step(self, batch_size: int) -> None:
        cur = self._current()
        cur["steps"] += 1
        cur["samples"] += batch_size
        cur["flops"] += self._train_flops_per_sample * batch_size

    def add_extra_flops(self, flops: float) -> None:
        self._current()["extra_flops"] += float(flops)

    def add_seconds(self, seconds: float) -> None:
        self._current()["seconds"] += float(seconds)

    def totals(self, phases: list[str] | None = None) -> dict[str, float]:
        """Cumulative cost over the given phases (all by default), in every unit."""
        chosen = [self.phases[p] for p in (phases if phases is not None else self.phases) if p in self.phases]
        out = {c: sum(p[c] for p in chosen) for c in COUNTERS}
        out["epochs"] = out["samples"] / self.train_size
        out["cost_epochs"] = out["epochs"] / self.full_epochs  # in units of one dense training run
        out["cost_flops"] = out["flops"] + out["extra_flops"]
        return out

    def dense_run_flops(self) -> float:
        """Training FLOPs of one dense run with the full schedule (the unit of the FLOPs axis)."""
        return 3.0 * self.dense_forward_flops * self.train_size * self.full_epochs

    def state_dict(self) -> dict:
        return {"phases": {k: dict(v) for k, v in self.phases.items()}, "phase": self.phase, "budget": dict(self.budget)}

    def load_state_dict(self, state: Mapping) -> None:
        self.phases = {k: dict(v) for k, v in state["phases"].items()}
        self.phase = state["phase"]
        self.budget = dict(state.get("budget", {}))
