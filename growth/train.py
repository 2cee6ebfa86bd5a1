"""The one training engine. Methods act through callbacks at its hook points:
after backward (before the optimizer step), after the step, at the end of an epoch and at the end
of a growth round. Masks are enforced here for every method: absent weights, their gradients and
their optimizer state stay exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from growth.cost import CostLedger
from growth.data import DatasetSplits
from growth.errors import ConfigError, DivergedError
from growth.masks import apply_masks, mask_gradients, mask_optimizer_state


class Callback:
    """Hook points of the engine; a method overrides the ones it needs."""

    def after_backward(self, engine: "Engine") -> None: ...

    def after_step(self, engine: "Engine") -> None: ...

    def end_of_epoch(self, engine: "Engine") -> None: ...

    def end_of_round(self, engine: "Engine") -> None: ...


@dataclass
class EpochResult:
    batches: int
    samples: int
    mean_loss: float
    stopped_early: bool
    # Accuracy on the training batches as they were trained on (augmented, weights changing).
    train_accuracy: float = float("nan")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r} but CUDA is not available here: use auto or cpu")
    return device


def lr_at(cfg, epoch: int, total_epochs: int | None = None) -> float:
    """Learning rate at the start of `epoch` (0-based) of a schedule of `total_epochs` epochs
    (default: the full schedule); stateless, so resumable. A schedule of another length keeps
    the full schedule's shape: cosine over its own length, step milestones scaled."""
    total = cfg.epochs if total_epochs is None else total_epochs
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / total))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m * total / cfg.epochs)
    return cfg.lr


def make_optimizer(cfg, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=cfg.momentum,
            nesterov=bool(cfg.nesterov and cfg.momentum > 0),
            weight_decay=cfg.weight_decay,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"trainer.optimizer={cfg.optimizer!r} is unknown: valid are ['sgd', 'adam']")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class Engine:
    def __init__(
        self,
        model: nn.Module,
        data: DatasetSplits,
        trainer_cfg,
        ledger: CostLedger,
        data_generator: torch.Generator,
        masks: Mapping[str, torch.Tensor] | None = None,
        callbacks: Iterable[Callback] = (),
    ):
        self.model = model
        self.data = data
        self.cfg = trainer_cfg
        self.ledger = ledger
        self.masks = masks
        self.callbacks = list(callbacks)
        self.batches = data.train_batches(trainer_cfg.batch_size, data_generator)
        self.loss_fn = nn.CrossEntropyLoss()
        self.step = 0  # optimizer steps taken by this engine in the current phase
        self.stop_requested = False
        self.context: dict = {}  # where we are (phase, round, epoch), for divergence reports

    def fire(self, hook: str) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self)

    def set_masks(self, masks: Mapping[str, torch.Tensor] | None, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Install new masks: zero absent weights and their optimizer state, re-weight the FLOP count."""
        self.masks = masks
        if masks is None:
            return
        apply_masks(self.model, masks)
        if optimizer is not None:
            mask_optimizer_state(optimizer, self.model, masks)
        self.ledger.set_densities({n: float(m.sum()) / m.numel() for n, m in masks.items()})

    def train_epoch(self, optimizer: torch.optim.Optimizer) -> EpochResult:
        """One pass over the training split (or until a callback requests a stop)."""
        model, masks = self.model, self.masks
        model.train()
        self.stop_requested = False
        loss_sum = torch.zeros((), device=self.data.device)
        correct = torch.zeros((), dtype=torch.long, device=self.data.device)
        # Non-finite losses are tracked on the device and checked once per epoch, so the step
        # itself never waits for the host.
        first_bad = torch.full((), -1, dtype=torch.long, device=loss_sum.device)
        batches = samples = 0
        for x, y in self.batches:
            optimizer.zero_grad(set_to_none=True)
            out = model(x)
            loss = self.loss_fn(out, y)
            loss.backward()
            # Hooks see the dense gradient (RigL grows by it); absent entries are zeroed after.
            self.fire("after_backward")
            masks = self.masks
            if masks is not None:
                mask_gradients(model, masks)
            optimizer.step()
            if masks is not None:
                apply_masks(model, masks)
            detached = loss.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), self.step, first_bad)
            loss_sum += detached
            correct += (out.detach().argmax(dim=1) == y).sum()
            batches += 1
            samples += len(x)
            self.step += 1
            self.ledger.count_step(len(x))
            self.fire("after_step")
            if self.stop_requested:
                break
        bad_step = int(first_bad)
        if bad_step >= 0:
            where = {**self.context, "step": bad_step}
            raise DivergedError(f"non-finite training loss at {where}", where)
        self.fire("end_of_epoch")
        return EpochResult(
            batches, samples, float(loss_sum) / max(batches, 1), self.stop_requested, int(correct) / max(samples, 1)
        )

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        n = len(getattr(self.data, f"{split}_y"))
        was_training = self.model.training
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.data.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.data.device)
        for xb, yb in self.data.eval_batches(split, self.cfg.eval_batch_size):
            out = self.model(xb)
            correct += (out.argmax(dim=1) == yb).sum()
            loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum").double()
        self.model.train(was_training)
        n = max(n, 1)
        return {"accuracy": int(correct) / n, "loss": float(loss_sum) / n}
