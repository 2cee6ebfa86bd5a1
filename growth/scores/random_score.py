"""Score `random`: no score, so selection is uniform over the absent edges (RG)."""

from __future__ import annotations

from growth.kinds import SCORES
from growth.scores.base import ScoreInputs


@SCORES.register("random")
def random_score(inputs: ScoreInputs) -> None:
    return None
