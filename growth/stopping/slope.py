"""Rule `slope`: stop once the proxy accuracy's gain per decade of density, a least-squares line
through the latest rounds covering `width_decades`, is below `max_gain_per_decade` (no logistic:
the rule reads the local slope, not where a fitted curve saturates)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from growth.config.checks import above, key
from growth.config.schema import StopConfig
from growth.kinds import STOP_RULES
from growth.stopping.recent_plateau import window_start


@dataclass
class SlopeConfig(StopConfig):
    # The line is fitted through the latest rounds covering at least this many decades.
    width_decades: float = key(0.3, above(0, "decades of density above 0"))
    # Stop when the fitted gain per decade of density is below this (accuracy as a fraction).
    max_gain_per_decade: float = key(0.02, above(0, "a gain per decade above 0"))


@dataclass(frozen=True)
class SlopeDecision:
    stop: bool
    reason: str
    slope: float  # fitted gain per decade of density
    points: int
    kind: str = "test"

    def as_record(self) -> dict:
        return {"slope_per_decade": self.slope, "slope_points": self.points}


@STOP_RULES.register("slope", schema=SlopeConfig)
def slope_rule(settings) -> Callable[[Sequence[dict]], SlopeDecision]:
    width, limit = float(settings.width_decades), float(settings.max_gain_per_decade)

    def decide(history: Sequence[dict]) -> SlopeDecision:
        x = np.log10([float(h["density"]) for h in history])
        acc = np.array([float(h["proxy_accuracy"]) for h in history])
        start = window_start(x, width)
        if start is None or len(x) - start < max(3, int(settings.confirm)) or len(x) < settings.min_points:
            return SlopeDecision(False, f"fewer rounds than the window of {width} decades needs", math.nan, len(x) - (start or 0))
        slope = float(np.polyfit(x[start:], acc[start:], 1)[0])
        below = slope < limit
        return SlopeDecision(below, f"gain {slope:.4f} per decade over the last {len(x) - start} rounds "
                                    f"({'<' if below else '>='} {limit:g})", slope, len(x) - start)

    return decide
