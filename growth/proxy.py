"""The proxy a growth round ends with: validation accuracy, read after an optional short
learning-rate anneal (growth.proxy.anneal_epochs), with the weights before it restored unless
growth.proxy.anneal_continue."""

from __future__ import annotations

import copy
import math

import torch

from growth.recipe import set_lr
from growth.train import Callback


class CosineToZero(Callback):
    """Sets the learning rate before every step: `lr` decayed by a cosine to 0 over `steps`."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, steps: int):
        self.optimizer, self.lr, self.steps, self.done = optimizer, lr, max(1, steps), 0
        set_lr(optimizer, lr)

    def after_step(self, engine) -> None:
        self.done += 1
        set_lr(self.optimizer, 0.5 * self.lr * (1.0 + math.cos(math.pi * min(self.done, self.steps) / self.steps)))


def read_proxy(run) -> dict:
    """Validation loss and accuracy at the end of a round; with an anneal, also the accuracy
    before it (`unannealed_accuracy`). `run` is the growth run (its engine, optimizer, generators)."""
    settings = run.cfg.growth.proxy
    engine = run.engine
    if settings.anneal_epochs == 0:
        return engine.evaluate("val")
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
    return {**val, "unannealed_accuracy": before["accuracy"]}
