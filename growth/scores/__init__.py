"""Growth scores over absent edges: one module each, registered on ``growth.kinds.SCORES``
(the interface: growth.scores.base). ``pwmp_scores`` (growth.scores.pwmp) is the PWMP computation."""

from growth.scores.base import ScoreInputs
from growth.scores.pwmp import pwmp_scores

__all__ = ["ScoreInputs", "pwmp_scores"]
