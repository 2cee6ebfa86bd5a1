"""Score `path_kernel`: the exact increment of the path-kernel trace an edge would bring.

The path kernel's trace is the sum over input-to-output paths of the product of the squared
weights along them; an edge's score is the sum over the paths through it of the product of the
other edges' squared weights, PWMP's computation with every edge weight squared (PWMP's L1 path
product is its surrogate). One forward and one backward pass, float64, as for PWMP.
Select it with `method=pwmpr method.score=path_kernel`.
"""

from __future__ import annotations

import torch

from growth.kinds import SCORES
from growth.scores.base import ScoreInputs
from growth.scores.pwmp import pwmp_scores


@SCORES.register("path_kernel")
def path_kernel_score(inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    scores = pwmp_scores(inputs.model, inputs.masks, inputs.example_input, power=2)
    inputs.charge_flops(3.0 * inputs.dense_forward_flops)
    return scores
