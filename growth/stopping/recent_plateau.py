"""Rule `recent_plateau`: stop once the most recent rounds, spanning at least `width_decades` of
density, have proxy accuracies within `tol` of one another and of the best so far.

Unlike the logistic rule's confirming points (any rounds within tol of the fitted ceiling), these
are the latest ones and cover a given stretch of density, so two noisy rounds one growth step apart
cannot end growth: at ratio 1.25 a step is 0.097 decades, and the default 0.2 decades needs the
last four rounds. No fit: nothing here depends on where the curve's midpoint lies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from growth.config.checks import above, key
from growth.config.schema import StopConfig
from growth.kinds import STOP_RULES


def window_start(x: Sequence[float], width: float) -> int | None:
    """Index of the latest round from which the rounds up to the last cover at least `width`
    decades of log10 density `x` (None: they do not yet)."""
    return next((i for i in range(len(x) - 1, -1, -1) if x[-1] - x[i] >= width - 1e-12), None)


@dataclass
class RecentPlateauConfig(StopConfig):
    # The confirming rounds are the latest ones covering at least this many decades of density.
    width_decades: float = key(0.2, above(0, "decades of density above 0"))


@dataclass(frozen=True)
class PlateauDecision:
    stop: bool
    reason: str
    points: int  # rounds in the window
    span: float  # decades of density they cover
    spread: float  # highest minus lowest proxy accuracy among them
    kind: str = "test"

    def as_record(self) -> dict:
        return {"plateau_points": self.points, "plateau_span": self.span, "plateau_spread": self.spread}


@STOP_RULES.register("recent_plateau", schema=RecentPlateauConfig)
def recent_plateau_rule(settings) -> Callable[[Sequence[dict]], PlateauDecision]:
    tol, confirm, width = float(settings.tol), int(settings.confirm), float(settings.width_decades)

    def decide(history: Sequence[dict]) -> PlateauDecision:
        x = [math.log10(float(h["density"])) for h in history]
        acc = [float(h["proxy_accuracy"]) for h in history]
        start = window_start(x, width)
        if start is None:
            return PlateauDecision(False, f"the rounds span {x[-1] - x[0]:.3f} < {width} decades", len(x), x[-1] - x[0], float("nan"))
        window = acc[start:]
        spread = max(window) - min(window)
        span = x[-1] - x[start]
        enough = len(window) >= max(confirm, 2)
        flat = spread <= tol and min(window) >= max(acc) - tol
        reason = (f"the last {len(window)} rounds span {span:.3f} decades with accuracies {spread:.4f} apart "
                  f"({'<=' if spread <= tol else '>'} tol {tol}); best so far {max(acc):.4f}")
        return PlateauDecision(enough and flat, reason, len(window), span, spread)

    return decide
