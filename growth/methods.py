"""Method registry and the context every method runs in.

A method is one class in one module, registered by name with :func:`register_method`; it gets a
:class:`RunContext` (config, run directory, data, device, ledger, random streams, checkpointing)
and returns the run's summary. The engine never asks which method is running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

from growth import records
from growth.cost import CostLedger, forward_flops_per_sample
from growth.data import DatasetSplits, build_dataset
from growth.masks import growable_weight_names
from growth.models import build_model
from growth.train import resolve_device

log = logging.getLogger("growth")

METHODS: dict[str, type] = {}
# Modules that register methods; importing them fills METHODS.
METHOD_MODULES = ("growth.grow",)


def register_method(*names: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        for name in names:
            if name in METHODS and METHODS[name] is not cls:
                raise ValueError(f"method {name!r} is registered twice")
            METHODS[name] = cls
        return cls

    return decorate


def load_methods() -> dict[str, type]:
    import importlib

    for module in METHOD_MODULES:
        importlib.import_module(module)
    return METHODS


# Offsets that give each random stream of a run its own seed.
STREAMS = {"data": 1, "grow": 2, "init": 3}


class RunContext:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.trainer.device)
        if self.device.type == "cpu" and cfg.trainer.cpu_threads > 0:
            torch.set_num_threads(int(cfg.trainer.cpu_threads))
        self.data: DatasetSplits = build_dataset(cfg.dataset).to(self.device)
        self.example_input = self.data.train_x[:1]
        self._segment_start = time.perf_counter()

    def generator(self, stream: str) -> torch.Generator:
        # Generators live on the CPU: their streams are then identical on every machine.
        return torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + STREAMS[stream])

    def build_model(self, init_seed: int | None = None) -> torch.nn.Module:
        torch.manual_seed(int(self.cfg.seed) if init_seed is None else init_seed)
        model = build_model(self.cfg.model, self.data.input_shape, self.data.num_classes)
        return model.to(self.device)

    def new_ledger(self, model: torch.nn.Module) -> CostLedger:
        layer_flops, other = forward_flops_per_sample(model, self.example_input, growable_weight_names(model))
        return CostLedger(len(self.data.train_x), self.cfg.trainer.epochs, layer_flops, other)

    def progress(self, message: str) -> None:
        if self.cfg.output.progress:
            log.info(message)
            if not logging.getLogger().handlers:
                print(message, flush=True)

    def elapsed(self) -> float:
        """Seconds since the last call (wall time of the current work segment)."""
        now = time.perf_counter()
        dt, self._segment_start = now - self._segment_start, now
        return dt

    def save_checkpoint(self, state: dict) -> None:
        records.save_checkpoint(self.run_dir, state)

    def load_checkpoint(self) -> dict | None:
        return records.load_checkpoint(self.run_dir)
