"""Rule `noise_tol`: METHOD's logistic rule with a tolerance no smaller than the measured noise:
tol' = max(tol, noise_factor x the fit's RMS residual), so a proxy whose round-to-round noise is
as large as tol cannot fire the rule on a dip."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from growth.config.checks import at_least, key
from growth.config.schema import StopConfig
from growth.kinds import STOP_RULES
from growth.stopping.logistic import FitDecision, StopRule


@dataclass
class NoiseTolConfig(StopConfig):
    # The tolerance used is at least this many times the logistic fit's RMS residual.
    noise_factor: float = key(2.0, at_least(0))


@STOP_RULES.register("noise_tol", schema=NoiseTolConfig)
def noise_tol_rule(settings) -> Callable[[Sequence[dict]], FitDecision]:
    base = StopRule(tol=settings.tol, confirm=settings.confirm, min_points=settings.min_points)

    def decide(history: Sequence[dict]) -> FitDecision:
        d = [h["density"] for h in history]
        acc = [h["proxy_accuracy"] for h in history]
        first = base.decide(d, acc)
        if first.residual is None or settings.noise_factor * first.residual <= settings.tol:
            return first
        tol = min(settings.noise_factor * first.residual, 0.999)
        again = replace(base, tol=tol).decide(d, acc)
        return replace(again, reason=f"{again.reason} (tol raised to {tol:.4f}: {settings.noise_factor:g} x residual)")

    return decide
