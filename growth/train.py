"""The one training engine. Methods act through callbacks at its hook points:
after backward (before the optimizer step), after the step, at the end of an epoch and at the end
of a growth round. Masks are enforced here for every method: absent weights, their gradients and
their optimizer state stay exactly 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from growth import distributed
from growth.cost import CostLedger
from growth.data import DatasetSplits
from growth.distributed import SINGLE, Shard
from growth.errors import DivergedError
from growth.masks import apply_masks, mask_gradients, mask_optimizer_state
# The recipe's parts live in growth.recipe; named here too, where methods and tests look for them.
from growth.recipe import (  # noqa: F401
    OPTIMIZERS,
    autocast,
    compile_problem,
    lr_at,
    make_optimizer,
    maybe_compile,
    param_groups,
    prepare_model,
    resolve_device,
    set_lr,
)


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
        forward_module: nn.Module | None = None,
        shard: Shard = SINGLE,
    ):
        self.model = prepare_model(model, trainer_cfg)  # channels-last if asked (a no-op when done before)
        self.precision = getattr(trainer_cfg, "precision", "fp32")
        self.channels_last = bool(getattr(trainer_cfg, "channels_last", False))
        # What training steps call: the model itself, or a wrapper of it (DistributedDataParallel,
        # torch.compile) sharing its parameters. Masks, scoring and checkpoints use `model`.
        self.forward_module = model if forward_module is None else forward_module
        self.data = data
        self.cfg = trainer_cfg
        self.ledger = ledger
        self.masks = masks
        self.callbacks = list(callbacks)
        # A data-parallel rank trains on its share of every global batch (growth/distributed.py).
        self.shard = shard
        self.batches = data.train_batches(trainer_cfg.batch_size, data_generator, shard=(shard.rank, shard.world))
        self.loss_fn = nn.CrossEntropyLoss()
        self.step = 0  # optimizer steps taken by this engine in the current phase
        self.stop_requested = False
        self.context: dict = {}  # where we are (phase, round, epoch), for divergence reports

    # The engine owns its fields; methods say what they want through these.
    def use_callbacks(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def locate(self, **where) -> None:
        """Where training is now (phase, round, epoch): given in divergence reports. A call with
        `phase` starts a new place; without it, refines the current one (e.g. the epoch)."""
        self.context = dict(where) if "phase" in where else {**self.context, **where}

    def resume_steps(self, steps: int) -> None:
        """Continue the step count of a checkpointed training."""
        self.step = int(steps)

    def request_stop(self) -> None:
        """End the current epoch after this step (e.g. a round whose validation accuracy stalled)."""
        self.stop_requested = True

    def fire(self, hook: str) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self)

    def autocast(self):
        """bf16 autocast on the data's device (trainer.precision=bf16) around a forward and its loss."""
        return autocast(self.data.device, self.precision)

    def format_input(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch in channels-last format when trainer.channels_last is set (one copy on
        the device; a no-op for a batch already in that format and for non-image inputs)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

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
            with self.autocast():
                out = self.forward_module(self.format_input(x))
                loss, detached, global_len = self.batch_loss(out, y, batches)
            loss.backward()
            # Hooks see the dense gradient (RigL grows by it); absent entries are zeroed after.
            self.fire("after_backward")
            masks = self.masks
            if masks is not None:
                mask_gradients(model, masks)
            optimizer.step()
            if masks is not None:
                apply_masks(model, masks)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), self.step, first_bad)
            loss_sum += detached
            correct += (out.detach().argmax(dim=1) == y).sum()
            batches += 1
            samples += global_len
            self.step += 1
            self.ledger.count_step(global_len)
            self.fire("after_step")
            if self.stop_requested:
                break
        if self.shard.world > 1:
            loss_sum, correct, first_bad = self._combine_ranks(loss_sum, correct, first_bad)
        bad_step = int(first_bad)
        if bad_step >= 0:
            where = {**self.context, "step": bad_step}
            raise DivergedError(f"non-finite training loss at {where}", where)
        distributed.sync_buffers(self.model)
        self.fire("end_of_epoch")
        return EpochResult(
            batches, samples, float(loss_sum) / max(batches, 1), self.stop_requested, int(correct) / max(samples, 1)
        )

    def batch_loss(self, out: torch.Tensor, y: torch.Tensor, batch_index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(loss to backpropagate, this batch's mean loss as a detached value, global batch size).

        With several ranks, this rank holds part of global batch `batch_index`; its summed loss is
        scaled so that DDP's average over ranks is the gradient of the global batch's mean loss,
        and the detached value is its share of that mean (summed over ranks once per epoch).
        """
        if self.shard.world == 1:
            loss = self.loss_fn(out, y)
            return loss, loss.detach(), len(y)
        bs = self.cfg.batch_size
        global_len = min(bs, self.data.num_train - batch_index * bs)
        local = nn.functional.cross_entropy(out, y, reduction="sum")
        return local * (self.shard.world / global_len), local.detach() / global_len, global_len

    def _combine_ranks(self, loss_sum, correct, first_bad):
        """Epoch totals over all ranks: one collective per epoch, none per step."""
        totals = torch.stack([loss_sum.double(), correct.double()])
        distributed.all_reduce_(totals)
        never = torch.iinfo(torch.long).max
        first = torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad)
        distributed.all_reduce_(first, op="min")
        first = torch.where(first == never, torch.full_like(first, -1), first)
        return totals[0].to(loss_sum.dtype), totals[1].round().long(), first

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        # Every rank evaluates the whole split on the same weights and BatchNorm statistics.
        distributed.sync_buffers(self.model)
        n = len(getattr(self.data, f"{split}_y"))
        was_training = self.model.training
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.data.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.data.device)
        for xb, yb in self.data.eval_batches(split, self.cfg.eval_batch_size):
            with self.autocast():
                out = self.model(self.format_input(xb))
                loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(dim=1) == yb).sum()
        self.model.train(was_training)
        n = max(n, 1)
        return {"accuracy": int(correct) / n, "loss": float(loss_sum) / n}
