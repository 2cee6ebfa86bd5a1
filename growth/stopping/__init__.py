"""Stop rules: pure functions of the recorded rounds.

A rule is registered on ``growth.kinds.STOP_RULES`` (``growth.stop.rule`` names it) as a factory
``rule(settings) -> decide``, where `settings` is the growth.stop section and
``decide(history) -> decision``: `history` is the list of rounds.csv rows so far (this round's
last), and the decision has ``stop``, ``reason`` and ``as_record()`` (the columns it adds to the
round's row), and optionally ``kind``, the word the stop reason uses ("<rule> <kind>: <reason>";
"fit" when absent, as for the logistic rule's decisions). The growth loop applies it; nothing else
of the run is visible to it.
"""

from growth.stopping.logistic import FitDecision, StopRule, logistic

__all__ = ["FitDecision", "StopRule", "logistic"]
