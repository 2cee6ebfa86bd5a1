"""Methods: their registration, the context every method runs in, and the base every method shares.

A method is one class in one module (a new file in baselines/ is found by import), registered
with :func:`register_method` under its name with its schema and what its records say of it; it
gets a :class:`RunContext` (config, run directory, data, device, ledger, random streams,
checkpointing) and returns the run's summary. The engine never asks which method is running.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from growth import distributed, records
from growth.context import STREAMS, RunContext
from growth.kinds import METHODS

__all__ = ["FAMILIES", "STREAMS", "MethodRun", "RunContext", "load_methods", "method_record", "register_method"]

FAMILIES = ("growth", "fixed_density", "pruning", "dense")


def register_method(
    name: str, *, schema: type, family: str, label: str | None = None, short_label: str | None = None,
    color: str | None = None, headline: bool = False, order: int | None = None, matched_budget: bool = False,
    validate=None, grows: bool | None = None,
) -> Callable[[type], type]:
    """Register a method class under `name` with its schema (conf/method/<name>.yaml names
    `<name>_schema`) and what its records say of it: its family (growth, fixed_density,
    pruning, dense), display labels, colour, legend order, whether it is the headline method, and
    whether it takes a matched budget (budget.match), and whether it runs the growth loop (`grows`,
    default: its family is growth), so its identity includes the growth sections. Stack the
    decorator to register variants."""
    if family not in FAMILIES:
        raise ValueError(f"method {name!r}: family {family!r} is not one of {FAMILIES}")
    return METHODS.register(
        name, schema=schema, validate=validate, family=family, label=label or name, short_label=short_label or label or name,
        color=color, headline=headline, order=order, matched_budget=matched_budget,
        grows=family == "growth" if grows is None else grows,
    )


def load_methods() -> dict[str, type]:
    """Every registered method (importing the modules that register them first): name -> class."""
    return {e.name: e.obj for e in METHODS.entries()}


def method_record(name: str) -> dict:
    """What a run's records say of its method, from its registry entry (summary.json and curve.csv)."""
    info = METHODS.entry(name).info
    return {
        "family": info["family"], "label": info["label"], "short_label": info["short_label"],
        "color": info["color"], "headline": info["headline"], "order": info["order"],
    }


# ---------------------------------------------------------------- the base of every method

def _rng_state(gens) -> dict:
    return {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}


def _set_rng_state(gens, state) -> None:
    torch.set_rng_state(state["torch"])
    for k, g in gens.items():
        g.set_state(state[k])


DAMAGED_LISTED = 1000  # damaged image files a summary lists (all are counted)


def damaged_images_record(damaged: list[dict]) -> dict:
    return {"count": len(damaged), "files": [dict(d) for d in damaged[:DAMAGED_LISTED]]}


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
            self.engine.resume_steps(int(self.state.get("engine_step", 0)))
            self.ctx.logger.resume_at(int(self.state.get("logger_step", 0)))
            self.ctx.progress(f"resuming {self.run_dir}")
        self.state["warnings"] = [*self.state.get("warnings", []), *getattr(self.ctx, "checkpoint_warnings", [])]
        self._note_damaged_images()
        self.engine.set_masks(self.masks)
        # Every rank has read the same checkpoint before rank 0 may write the next one.
        distributed.barrier()
        self.ctx.elapsed()
        self.execute()
        return self.write_records("finished")

    def _note_damaged_images(self) -> None:
        """Keep the damaged images the data left out (dataset.on_damaged=skip) in the state; a
        resume that finds others (a file damaged or mended since) says so in the warnings."""
        damaged = [d["path"] for d in getattr(self.ctx.data, "damaged", [])]
        before = self.state.get("damaged_images")
        if before is None and damaged:
            self.state["warnings"].append(
                f"{len(damaged)} damaged image file(s) left out of the data (dataset.on_damaged=skip; see damaged_images)"
            )
        elif before is not None and before != damaged:
            self.state["warnings"].append(
                f"the damaged images left out changed on resume ({len(before)} before, {len(damaged)} now): "
                "the resumed training reads other files than the first attempt"
            )
        self.state["damaged_images"] = damaged

    def checkpoint(self) -> None:
        self.ledger.add_seconds(self.ctx.elapsed())
        self.state["engine_step"] = self.engine.step
        self.state["logger_step"] = self.ctx.logger.step
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
        self.engine.use_callbacks(callbacks)
        report_every = max(1, epochs // 10)
        for epoch in range(prog["epoch"], epochs):
            self.engine.locate(phase=key, epoch=epoch)
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
        self.engine.use_callbacks([])
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
        described = method_record(cfg.method.name)
        # Every curve point says what it is (family, phase, label), so analysis needs no method names.
        curve = [
            {**c, "family": described["family"], "phase": str(c.get("point", "")).split(":")[0], "label": described["label"]}
            for c in sorted(self.state["curve"], key=lambda c: c["density"])
        ]
        records.atomic_write_csv(self.run_dir / "curve.csv", curve)
        totals = self.ledger.totals()
        summary = {
            **records.run_fields(cfg),
            **described,
            # The phase the run was in when this was written (growth, extensive, level, train).
            "phase": self.ledger.phase.split(":")[0],
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
            # damaged image files left out of the data (dataset.on_damaged=skip): how many, and
            # which (split, path, reason; the first DAMAGED_LISTED)
            "damaged_images": damaged_images_record(getattr(self.ctx.data, "damaged", [])),
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
