"""Score `pwmp`: the Path Weight Magnitude Product of every edge (growth.scores.pwmp)."""

from __future__ import annotations

import torch

from growth.kinds import SCORES
from growth.scores.base import ScoreInputs
from growth.scores.pwmp import pwmp_scores


@SCORES.register("pwmp")
def pwmp_score(inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    scores = pwmp_scores(inputs.model, inputs.masks, inputs.example_input)
    # One forward and one backward pass of a single sample through the dense graph.
    inputs.charge_flops(3.0 * inputs.dense_forward_flops)
    return scores
