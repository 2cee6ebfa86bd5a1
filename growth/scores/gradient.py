"""Score `gradient`: |dLoss/dw| over absent edges, averaged over growth.gradient_batches training
batches (taken only when growing; GG)."""

from __future__ import annotations

import torch

from growth.errors import DivergedError
from growth.kinds import SCORES
from growth.masks import growable_parameters
from growth.scores.base import ScoreInputs


@SCORES.register("gradient")
def gradient_score(inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    model = inputs.model
    params = growable_parameters(model)
    totals = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    batches = 0
    model.train()
    for loss, global_len in inputs.batch_losses():
        model.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in params.items():
            totals[n] += p.grad.detach().abs().double()
        batches += 1
        # Dense gradient pass: forward + backward at full density.
        inputs.charge_flops(3.0 * inputs.dense_forward_flops * global_len)
        if batches >= inputs.settings.gradient_batches:
            break
    model.zero_grad(set_to_none=True)
    scores = {n: t / batches for n, t in totals.items()}
    if not all(bool(torch.isfinite(s).all()) for s in scores.values()):
        raise DivergedError("non-finite gradient scores", {"phase": "growth"})
    return scores
