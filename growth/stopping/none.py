"""Rule `none`: never stops (growth runs to growth.max_density / max_rounds). The logistic fit is
still recorded every round, as it is, so such a run can be audited and replayed with any rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from growth.config.schema import StopConfig
from growth.kinds import STOP_RULES
from growth.stopping.logistic import FitDecision, logistic_rule


@dataclass(frozen=True)
class NeverStop:
    fit: FitDecision
    stop: bool = False
    reason: str = "growth.stop.rule=none never stops"

    def as_record(self) -> dict:
        return self.fit.as_record()


@STOP_RULES.register("none", schema=StopConfig)
def no_rule(settings) -> Callable[[Sequence[dict]], NeverStop]:
    fit = logistic_rule(settings)
    return lambda history: NeverStop(fit(history))
