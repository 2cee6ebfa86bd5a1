"""The context a method runs in: config, run directory, data on the device, the random streams,
model building, the ledger, progress lines and checkpoint access."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from growth import distributed, records
from growth.cost import CostLedger, forward_flops_per_sample
from growth.data import DatasetSplits, build_dataset
from growth.masks import growable_weight_names
from growth.models import build_model
from growth.train import maybe_compile, prepare_model, resolve_device

log = logging.getLogger("growth")


# Offsets that give each random stream of a run its own seed.
STREAMS = {"data": 1, "grow": 2, "init": 3}


class RunContext:
    def __init__(self, cfg: DictConfig, run_dir: Path, data: DatasetSplits | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.shard = distributed.current()  # this process's rank in a data-parallel run
        self.device = distributed.cuda_device(resolve_device(cfg.trainer.device))
        if self.device.type == "cpu" and cfg.trainer.cpu_threads > 0:
            torch.set_num_threads(int(cfg.trainer.cpu_threads))
        # `data`: already read (growth.run reads it before the run directory is touched).
        self.data: DatasetSplits = (data if data is not None else build_dataset(cfg.dataset)).to(self.device)
        self.example_input = self.data.example_input()
        self._segment_start = time.perf_counter()
        from growth.loggers import RunLogger, build_logger

        # Rank 0 alone logs a data-parallel run.
        self.logger = build_logger(cfg, self.run_dir) if self.shard.is_writer else RunLogger()

    def generator(self, stream: str) -> torch.Generator:
        # Generators live on the CPU: their streams are then identical on every machine.
        return torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + STREAMS[stream])

    def build_model(self, init_seed: int | None = None) -> torch.nn.Module:
        torch.manual_seed(int(self.cfg.seed) if init_seed is None else init_seed)
        model = build_model(self.cfg.model, self.data.input_shape, self.data.num_classes)
        return prepare_model(model.to(self.device), self.cfg.trainer)  # channels-last before any wrapper

    def training_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module training steps call: `model`, or a wrapper sharing its parameters."""
        return maybe_compile(distributed.wrap(model, self.device), self.cfg.trainer)  # trainer.compile

    def new_ledger(self, model: torch.nn.Module) -> CostLedger:
        layer_flops, other = forward_flops_per_sample(model, self.example_input, growable_weight_names(model))
        return CostLedger(self.data.num_train, self.cfg.trainer.epochs, layer_flops, other)

    def progress(self, message: str) -> None:
        if self.cfg.output.progress and self.shard.is_writer:
            # Under Hydra the logging setup shows INFO; elsewhere (a bare SLURM job, a script)
            # progress goes to stdout.
            if log.isEnabledFor(logging.INFO) and logging.getLogger().handlers:
                log.info(message)
            else:
                print(message, flush=True)

    def elapsed(self) -> float:
        """Seconds since the last call (wall time of the current work segment)."""
        now = time.perf_counter()
        dt, self._segment_start = now - self._segment_start, now
        return dt

    def save_checkpoint(self, state: dict) -> None:
        records.save_checkpoint(self.run_dir, state)

    def load_checkpoint(self) -> dict | None:
        self.checkpoint_warnings: list[str] = []  # damaged checkpoints skipped: kept in the records
        return records.load_checkpoint(self.run_dir, problems=self.checkpoint_warnings)
