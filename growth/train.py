"""The one training engine. Methods act through callbacks at its hook points:
after backward (before the optimizer step), after the step, at the end of an epoch and at the end
of a growth round. Masks are enforced here for every method: absent weights, their gradients and
their optimizer state stay exactly 0.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from growth import distributed
from growth.cost import CostLedger
from growth.data import DatasetSplits
from growth.distributed import SINGLE, Shard
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
    the full schedule's shape: cosine over its own length, step milestones scaled.

    With `warmup_epochs` W (scaled like the milestones to a schedule of another length), epoch
    e < W trains at the schedule's lr x (e + 1) / (W + 1): a linear ramp in W steps, after which
    the schedule runs unchanged (the warm-up replaces its first epochs, as in timm and DeiT)."""
    total = cfg.epochs if total_epochs is None else total_epochs
    if cfg.schedule == "cosine":
        lr = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / total))
    elif cfg.schedule == "step":
        lr = cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m * total / cfg.epochs)
    else:
        lr = cfg.lr
    warmup = getattr(cfg, "warmup_epochs", 0) * total / cfg.epochs
    if epoch < warmup:
        lr *= (epoch + 1) / (warmup + 1)
    return lr


OPTIMIZERS = ("sgd", "adam", "adamw")


def param_groups(cfg, model: nn.Module) -> list[dict]:
    """The optimizer's parameter groups: one, or with trainer.decay_scope=weights two, the second
    (biases, norm scales, position embeddings: every parameter that is not a growable Linear or
    Conv weight) without weight decay, as ViT recipes (DeiT, timm) do."""
    named = list(model.named_parameters())
    if getattr(cfg, "decay_scope", "all") == "all":
        return [{"params": [p for _, p in named]}]
    from growth.masks import growable_weight_names

    decayed = set(growable_weight_names(model))
    groups = [
        {"params": [p for n, p in named if n in decayed]},
        {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(cfg, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(cfg, model)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=cfg.momentum,
            nesterov=bool(cfg.nesterov and cfg.momentum > 0),
            weight_decay=cfg.weight_decay,
        )
    betas = tuple(float(b) for b in getattr(cfg, "betas", (0.9, 0.999)))
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        # Decoupled decay p <- p (1 - lr wd): an absent weight (0) stays 0, like its moments.
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=cfg.weight_decay)
    raise ConfigError(f"trainer.optimizer={cfg.optimizer!r} is unknown: valid are {list(OPTIMIZERS)}")


# ------------------------------------------------------------------ speed options


def autocast(device: torch.device | str, precision: str):
    """The context of a training forward and loss, or of an evaluation: bf16 autocast on the
    data's device for precision=bf16, nothing for fp32. PWMP scoring disables autocast itself."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ConfigError(f"trainer.precision={precision!r} is unknown: valid are ['fp32', 'bf16']")
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, trainer_cfg) -> nn.Module:
    """Put a conv model's 4-D parameters and buffers in channels-last memory format when
    trainer.channels_last is set (in place: the Parameter objects stay the same, so optimizers,
    masks and wrappers made later see them). Idempotent; models without 4-D weights are left as
    they are. Call it before wrapping the model (DistributedDataParallel lays out its gradient
    buckets by the parameters' strides)."""
    if getattr(trainer_cfg, "channels_last", False) and any(p.dim() == 4 for p in model.parameters()):
        model.to(memory_format=torch.channels_last)
    return model


def compile_problem(device_type: str) -> str | None:
    """Why torch.compile cannot run on this machine for `device_type`, or None."""
    if device_type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "trainer.compile=true on CUDA needs Triton (pip install triton), which is not installed"
        return None
    if device_type != "cpu":
        return f"trainer.compile=true is supported here on cpu and cuda only, not {device_type}"
    compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if not any(c and shutil.which(c) for c in compilers):
        return (
            "trainer.compile=true on the CPU needs a C++ compiler for TorchInductor (g++ or clang++, or $CXX), "
            "and none is on PATH: install one or set trainer.compile=false"
        )
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return (
            "trainer.compile=true on the CPU needs the Python development headers (Python.h) for TorchInductor: "
            "install them (e.g. python3-dev) or set trainer.compile=false"
        )
    return None


def maybe_compile(module: nn.Module, trainer_cfg) -> nn.Module:
    """`module`, or torch.compile(module) when trainer.compile is set. The compiled module shares
    the parameters, so masks applied in place to the plain model hold for it; only the training
    forward goes through it (evaluation, scoring, state dicts use the plain model)."""
    if not getattr(trainer_cfg, "compile", False):
        return module
    param = next(module.parameters(), None)
    problem = compile_problem(param.device.type if param is not None else "cpu")
    if problem:
        raise ConfigError(problem)
    return torch.compile(module)


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
