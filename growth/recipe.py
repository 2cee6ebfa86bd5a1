"""The training recipe's parts the engine applies: the device, the optimizer and its parameter
groups, the learning-rate schedule, and the speed options (bf16 autocast, channels-last,
torch.compile)."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import sysconfig
from pathlib import Path

import torch
from torch import nn

from growth.errors import ConfigError


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
