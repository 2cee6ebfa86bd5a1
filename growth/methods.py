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

from growth import distributed, records
from growth.cost import CostLedger, forward_flops_per_sample
from growth.data import DatasetSplits, build_dataset
from growth.masks import growable_weight_names
from growth.models import build_model
from growth.train import maybe_compile, prepare_model, resolve_device

log = logging.getLogger("growth")

METHODS: dict[str, type] = {}
# Modules that register methods; importing them fills METHODS. Every module of the baselines
# package is imported too, so a new method is a new file there (and its conf/method/<name>.yaml).
METHOD_MODULES = ("growth.grow",)
METHOD_PACKAGE = "baselines"


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
    import pkgutil

    package = importlib.import_module(METHOD_PACKAGE)
    found = [f"{METHOD_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]
    for module in (*METHOD_MODULES, *sorted(found)):
        importlib.import_module(module)
    return METHODS


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


# ---------------------------------------------------------------- the base of every method

def _rng_state(gens) -> dict:
    return {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}


def _set_rng_state(gens, state) -> None:
    torch.set_rng_state(state["torch"])
    for k, g in gens.items():
        g.set_state(state[k])


class MethodRun:
    """What every method shares: random streams, model, ledger, engine, checkpoint and resume,
    resumable fixed-length training, and the records (curve.csv, summary.json).

    A subclass sets up its first state in :meth:`initial_state` and does its work in
    :meth:`execute`, keeping everything it needs to resume in ``self.state`` (plain data and
    tensors) and calling :meth:`checkpoint` at its boundaries.
    """

    def __init__(self, ctx: RunContext):
        from growth.train import Engine

        self.ctx = ctx
        self.cfg = ctx.cfg
        self.run_dir = ctx.run_dir
        self.gens = {"data": ctx.generator("data"), "grow": ctx.generator("grow")}
        self.model = ctx.build_model()
        self.ledger = ctx.new_ledger(self.model)
        self.masks = None
        self.optimizer = None
        self._saved_optimizer = None
        self.engine = Engine(
            self.model, ctx.data, self.cfg.trainer, self.ledger, self.gens["data"],
            forward_module=ctx.training_module(self.model), shard=ctx.shard,
        )

    # ------------------------------------------------------------ for subclasses

    def initial_state(self) -> dict:
        return {}

    def execute(self) -> None:
        raise NotImplementedError

    def summary_fields(self) -> dict:
        return {}

    # ------------------------------------------------------------ driver

    def run(self) -> dict:
        saved = self.ctx.load_checkpoint()
        if saved is None:
            records.atomic_torch_save(
                {n: t.cpu() for n, t in self.model.state_dict().items()}, self.run_dir / "snapshots" / "init.pt"
            )
            self.state = {"curve": [], "progress": {}, **self.initial_state()}
        else:
            self.model.load_state_dict(saved["model"])
            self.state = saved["state"]
            self.masks = {n: m.to(self.ctx.device) for n, m in saved["masks"].items()} if saved["masks"] is not None else None
            self.ledger.load_state_dict(saved["ledger"])
            _set_rng_state(self.gens, saved["rng"])
            self._saved_optimizer = saved["optimizer"]
            self.engine.step = int(self.state.get("engine_step", 0))
            self.ctx.progress(f"resuming {self.run_dir}")
        self.state["warnings"] = [*self.state.get("warnings", []), *getattr(self.ctx, "checkpoint_warnings", [])]
        self.engine.set_masks(self.masks)
        # Every rank has read the same checkpoint before rank 0 may write the next one.
        distributed.barrier()
        self.ctx.elapsed()
        self.execute()
        return self.write_records("finished")

    def checkpoint(self) -> None:
        self.ledger.add_seconds(self.ctx.elapsed())
        self.state["engine_step"] = self.engine.step
        self.ctx.save_checkpoint(
            {
                "version": 2,
                "state": self.state,
                "model": {n: t.cpu() for n, t in self.model.state_dict().items()},
                "masks": {n: m.cpu() for n, m in self.masks.items()} if self.masks is not None else None,
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "rng": _rng_state(self.gens),
                "ledger": self.ledger.state_dict(),
            }
        )
        self.write_records("running")

    def new_optimizer(self, lr: float, resume: bool):
        """A fresh optimizer, or the checkpointed one when resuming the training it belonged to."""
        from growth.train import make_optimizer

        self.optimizer = make_optimizer(self.cfg.trainer, self.model, lr)
        if resume and self._saved_optimizer is not None:
            self.optimizer.load_state_dict(self._saved_optimizer)
        self._saved_optimizer = None
        return self.optimizer

    def set_masks(self, masks) -> None:
        self.masks = masks
        self.engine.set_masks(masks, self.optimizer)

    def train_fixed(self, key: str, epochs: int, setup: Callable[[], None] | None = None, callbacks=(), label: str = "") -> dict:
        """Train `epochs` epochs with the full schedule's shape stretched to that length,
        checkpointing after every epoch; resumable mid-way. Returns validation and test metrics.

        `setup` (weights, masks) runs only when this training starts from its first epoch.
        """
        from growth.train import lr_at, set_lr

        cfg = self.cfg
        prog = self.state["progress"].setdefault(key, {"epoch": 0, "result": None})
        if prog["result"] is not None:
            return prog["result"]
        resume = prog["epoch"] > 0
        if not resume and setup is not None:
            setup()
        self.ledger.set_phase(key)
        self.new_optimizer(cfg.trainer.lr, resume)
        self.engine.set_masks(self.masks, self.optimizer)
        self.engine.callbacks = list(callbacks)
        report_every = max(1, epochs // 10)
        for epoch in range(prog["epoch"], epochs):
            self.engine.context = {"phase": key, "epoch": epoch}
            set_lr(self.optimizer, lr_at(cfg.trainer, epoch, total_epochs=epochs))
            result = self.engine.train_epoch(self.optimizer)
            prog["epoch"] = epoch + 1
            self.ctx.logger.log_epoch(
                key, epoch + 1,
                {"loss": result.mean_loss, "train_accuracy": result.train_accuracy, "lr": self.optimizer.param_groups[0]["lr"]},
            )
            if (epoch + 1) % report_every == 0 and epoch + 1 < epochs:
                self.ctx.progress(f"{label or key} epoch {epoch + 1}/{epochs}  loss {result.mean_loss:.4f}")
            if epoch + 1 < epochs:
                self.checkpoint()
        self.engine.callbacks = []
        val, test = self.engine.evaluate("val"), self.engine.evaluate("test")
        prog["result"] = {"val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"], "test_loss": test["loss"]}
        return prog["result"]

    def current_density(self) -> float:
        from growth.masks import density

        return density(self.masks) if self.masks is not None else 1.0

    def add_curve_point(self, point: dict) -> None:
        self.state["curve"] = [c for c in self.state["curve"] if c.get("point") != point.get("point")] + [point]

    # ------------------------------------------------------------ records

    def write_records(self, status: str) -> dict:
        cfg = self.cfg
        curve = sorted(self.state["curve"], key=lambda c: c["density"])
        records.atomic_write_csv(self.run_dir / "curve.csv", curve)
        totals = self.ledger.totals()
        summary = {
            **records.run_fields(cfg),
            "status": status,
            "seed_density": None,
            "discovered_density": None,
            "test_accuracy": None,
            "cost": self.summary_cost(None),
            "total_cost": {k: totals[k] for k in ("cost_epochs", "cost_flops", "steps", "samples", "seconds")},
            "dense_run_flops": self.ledger.dense_run_flops(),
            "budget": dict(self.ledger.budget),
            # e.g. a damaged checkpoint that was skipped when resuming
            "warnings": list(self.state.get("warnings", [])),
        }
        summary.update(self.summary_fields())
        records.atomic_write_json(self.run_dir / "summary.json", summary)
        if status == "finished":
            self.ctx.logger.log_records(summary, curve)
        return summary

    @staticmethod
    def summary_cost(point: dict | None) -> dict:
        """The summary's `cost` of a curve point (all None when there is no point yet)."""
        keys = {"epochs": "cost_epochs", "flops": "cost_flops", "seconds": "wall_seconds"}
        return {k: (point[c] if point else None) for k, c in keys.items()}

    def point_cost(self, phases: list[str], base: dict | None = None) -> dict:
        """Cost of a curve point: the given ledger phases plus an earlier cumulative cost."""
        own = self.ledger.totals(phases)
        base = base or {}
        return {
            "cost_epochs": base.get("cost_epochs", 0.0) + own["cost_epochs"],
            "cost_flops": base.get("cost_flops", 0.0) + own["cost_flops"],
            "wall_seconds": base.get("wall_seconds", 0.0) + own["seconds"],
        }
