"""Rule `extrapolate`: from the logistic fit of the rounds so far, predict the smallest density
whose fitted accuracy is within `tol` of the fitted asymptote b, and stop once growth has reached
it: x* = x0 + ln((b - a) / tol - 1) / k (x = log10 density). A valid fit as in METHOD's rule."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from growth.config.schema import StopConfig
from growth.kinds import STOP_RULES
from growth.stopping.logistic import FitDecision, StopRule


@dataclass(frozen=True)
class ExtrapolateDecision:
    fit: FitDecision
    stop: bool
    reason: str
    predicted_density: float | None

    def as_record(self) -> dict:
        return {**self.fit.as_record(), "extrapolated_density": self.predicted_density}


def predicted_density(fit: FitDecision, tol: float) -> float | None:
    a, b, k, x0 = fit.a, fit.b, fit.k, fit.x0
    if not fit.valid or None in (a, b, k, x0) or b - a <= tol:
        return None
    return 10 ** (x0 + math.log((b - a) / tol - 1.0) / k)


@STOP_RULES.register("extrapolate", schema=StopConfig)
def extrapolate_rule(settings) -> Callable[[Sequence[dict]], ExtrapolateDecision]:
    # The fit and its validity are the logistic rule's; confirm plays no part here.
    base = StopRule(tol=settings.tol, confirm=0, min_points=settings.min_points)

    def decide(history: Sequence[dict]) -> ExtrapolateDecision:
        fit = base.decide([h["density"] for h in history], [h["proxy_accuracy"] for h in history])
        target = predicted_density(fit, settings.tol)
        now = float(history[-1]["density"])
        if target is None:
            return ExtrapolateDecision(replace(fit, stop=False), False, f"no prediction: {fit.reason}", None)
        reached = now >= target * (1 - 1e-9)
        reason = f"predicted plateau density {100 * target:.3f}% {'reached' if reached else 'not reached'} at {100 * now:.3f}%"
        return ExtrapolateDecision(replace(fit, stop=reached), reached, reason, target)

    return decide
