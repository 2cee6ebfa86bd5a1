"""The proxy a growth round ends with: validation accuracy, read after an optional short
learning-rate anneal (growth.proxy.anneal_epochs), with the weights before it restored unless
growth.proxy.anneal_continue; or read from a moving average of the round's weights
(growth.proxy.ema_halflife, growth.proxy.source=ema). Every signal enabled is recorded."""

from __future__ import annotations

import copy
import math

import torch

from growth.recipe import set_lr
from growth.train import Callback

# The accuracies a round may record beside proxy_accuracy (the one the rule reads): before the
# anneal (growth.proxy.anneal_epochs > 0) and of the moving average (growth.proxy.ema_halflife > 0).
PROXY_SIGNALS = ("unannealed_accuracy", "ema_accuracy")


class CosineToZero(Callback):
    """Sets the learning rate before every step: `lr` decayed by a cosine to 0 over `steps`."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, steps: int):
        self.optimizer, self.lr, self.steps, self.done = optimizer, lr, max(1, steps), 0
        set_lr(optimizer, lr)

    def after_step(self, engine) -> None:
        self.done += 1
        set_lr(self.optimizer, 0.5 * self.lr * (1.0 + math.cos(math.pi * min(self.done, self.steps) / self.steps)))


class WeightAverage(Callback):
    """An exponential moving average of a model's floating-point state (weights and buffers) over
    the steps since `restart`, with a half-life of `halflife_steps` steps. Masked weights stay 0 in
    it: every step's weights are masked before they are averaged."""

    def __init__(self, model: torch.nn.Module, halflife_steps: float):
        self.model = model
        self.keep = 0.5 ** (1.0 / max(halflife_steps, 1e-9))
        self.average: dict[str, torch.Tensor] | None = None
        # The tensors averaged, looked up once: the training step only adds one fused lerp.
        self.sources = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}

    def restart(self) -> None:
        self.average = None

    @torch.no_grad()
    def after_step(self, engine) -> None:
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in self.sources.items()}
            return
        torch._foreach_lerp_(list(self.average.values()), [self.sources[k] for k in self.average], 1.0 - self.keep)

    def evaluate(self, engine, split: str = "val") -> dict[str, float]:
        """The average's validation metrics; the model's own state is put back after."""
        if self.average is None:
            return engine.evaluate(split)
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items() if k in self.average}
        self.model.load_state_dict(self.average, strict=False)
        try:
            return engine.evaluate(split)
        finally:
            self.model.load_state_dict(current, strict=False)


def weight_average(run) -> WeightAverage | None:
    """The round's moving average when growth.proxy.ema_halflife > 0 (half-life in steps: that
    fraction of the steps a round is given)."""
    settings, timing = run.cfg.growth.proxy, run.cfg.growth.timing
    if not settings.ema_halflife > 0:
        return None
    epochs = timing.max_epochs if timing.mode == "adaptive" else timing.epochs
    return WeightAverage(run.model, settings.ema_halflife * epochs * len(run.engine.batches))


def read_proxy(run, average: WeightAverage | None = None) -> dict:
    """Validation loss and accuracy at the end of a round, from the source growth.proxy.source
    names; with an anneal, also the accuracy before it (`unannealed_accuracy`); with a moving
    average, its accuracy (`ema_accuracy`). `run` is the growth run (engine, optimizer, generators)."""
    settings = run.cfg.growth.proxy
    engine = run.engine
    signals = {}
    if average is not None:
        ema = average.evaluate(engine)
        signals["ema_accuracy"] = ema["accuracy"]
    if settings.anneal_epochs == 0:
        return {**(ema if settings.source == "ema" else engine.evaluate("val")), **signals}
    before = engine.evaluate("val")
    saved = None
    if not settings.anneal_continue:
        saved = {
            "model": copy.deepcopy(run.model.state_dict()),
            "optimizer": copy.deepcopy(run.optimizer.state_dict()),
            "rng": {k: g.get_state() for k, g in run.gens.items()},
            "torch_rng": torch.get_rng_state(),
            "steps": engine.step,
        }
    lr = run.optimizer.param_groups[0]["lr"]
    callbacks = list(engine.callbacks)
    engine.use_callbacks([CosineToZero(run.optimizer, lr, settings.anneal_epochs * len(engine.batches))])
    for epoch in range(settings.anneal_epochs):
        engine.locate(epoch=f"anneal {epoch}")
        engine.train_epoch(run.optimizer)
    engine.use_callbacks(callbacks)
    val = engine.evaluate("val")
    if saved is not None:
        run.model.load_state_dict(saved["model"])
        run.optimizer.load_state_dict(saved["optimizer"])
        for k, g in run.gens.items():
            g.set_state(saved["rng"][k])
        torch.set_rng_state(saved["torch_rng"])
        engine.resume_steps(saved["steps"])
    set_lr(run.optimizer, lr)
    return {**(ema if settings.source == "ema" else val), **signals, "unannealed_accuracy": before["accuracy"]}
