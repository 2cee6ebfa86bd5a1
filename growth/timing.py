"""Adaptive round timing: a growth round ends when validation accuracy stops improving."""

from __future__ import annotations

from growth.train import Callback, Engine


class AdaptiveRoundTimer(Callback):
    """Ends a round when validation accuracy stops improving (evaluated every `eval_every` batches)."""

    def __init__(self, timing):
        self.timing = timing
        self.reset()

    def reset(self) -> None:
        self.best = -1.0
        self.bad = 0
        self.batches = 0

    def after_step(self, engine: Engine) -> None:
        self.batches += 1
        if self.batches % self.timing.eval_every:
            return
        acc = engine.evaluate("val")["accuracy"]
        engine.model.train()
        if acc > self.best + self.timing.min_delta:
            self.best, self.bad = acc, 0
        else:
            self.bad += 1
        if self.bad >= self.timing.patience:
            engine.request_stop()
