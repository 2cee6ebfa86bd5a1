"""Fixed-density training (PHEW, RigL) and matched training budgets.

A fixed-density run trains `budget.epochs` epochs, or `trainer.epochs`, or, with
`budget.match=<method>`, as long as the reference run of that method (same dataset, model and
seed) cost up to this run's density. The matching rule, in the configured unit:

    cost_ref(d) = growth cost up to d + the cost of one extensive training at d

where the growth cost is read from the reference's rounds.csv and linearly interpolated in
log10(density) between the two rounds that bracket d (clamped to the first or last round), and
the extensive training is `trainer.epochs` epochs (one dense-run unit in epochs; in FLOPs, this
run's own training FLOPs for that many epochs at its density). The budget is then rounded to
whole epochs (at least one). The summary records the budget given and the budget used.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from growth import records
from growth.config import MethodConfig
from growth.config.checks import density, key, one_of
from growth.errors import ConfigError
from growth.masks import Masks
from growth.methods import MethodRun


@dataclass
class FixedDensityConfig(MethodConfig):
    """The schema every fixed-density method starts from."""

    # Fraction of growable edges kept throughout training.
    density: float = key(0.1, density())
    # fan_in: scale each unit's surviving incoming weights by sqrt(fan_in / active fan_in), as
    # for growth seeds, so sparse baselines start with the dense initialisation's scale; none.
    rescale: str = key("fan_in", one_of("fan_in", "none"))


def find_reference(cfg) -> Path:
    """The finished run of `budget.match` with this run's dataset, model and seed."""
    b = cfg.budget
    want = {**records.run_fields(cfg), "method": b.match}
    if b.reference:
        ref = Path(b.reference)
        summary = records.read_summary(ref)
        if summary is None or summary.get("status") != "finished":
            raise ConfigError(f"budget.reference={str(ref)!r} is not a finished run (no summary.json with status finished)")
        mismatch = {k: summary.get(k) for k, v in want.items() if summary.get(k) != v}
        if mismatch:
            raise ConfigError(f"budget.reference={str(ref)!r} does not match this run: it has {mismatch}, this run needs {want}")
        return ref
    root = Path(cfg.output.root)
    candidates = sorted(p.parent for p in root.glob("*/summary.json"))
    found = []
    for run_dir in candidates:
        summary = records.read_summary(run_dir)
        if summary and summary.get("status") == "finished" and all(summary.get(k) == v for k, v in want.items()):
            found.append(run_dir)
    wanted = ", ".join(f"{k}={v}" for k, v in want.items())
    if not found:
        raise ConfigError(
            f"budget.match={b.match!r}: no finished run with {wanted} under output.root={str(root)!r} "
            f"(looked at {len(candidates)} run directories); run it first, or set budget.reference"
        )
    if len(found) > 1:
        raise ConfigError(
            f"budget.match={b.match!r}: {len(found)} finished runs with {wanted} under {str(root)!r}: "
            f"{[str(f) for f in found]}; choose one with budget.reference"
        )
    return found[0]


def reference_growth_cost(ref_dir: Path, target_density: float, column: str) -> float:
    """Growth cost of the reference up to `target_density` (interpolated in log10 density)."""
    with open(ref_dir / "rounds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ConfigError(f"reference run {ref_dir} has no growth rounds in rounds.csv")
    x = np.log10([float(r["density"]) for r in rows])
    y = np.array([float(r[column]) for r in rows])
    return float(np.interp(math.log10(target_density), x, y))


class FixedDensityRun(MethodRun):
    """Masks at `method.density`, then one training of the budgeted length."""

    def build_masks(self) -> Masks:
        raise NotImplementedError

    @classmethod
    def precheck(cls, cfg) -> None:
        if cfg.budget.match is not None:
            find_reference(cfg)

    def target_density(self) -> float | None:
        """method.density, or the density of the reference's round budget.snapshot (None when
        the reference never reached that round)."""
        snapshot = self.cfg.budget.snapshot
        if snapshot is None:
            return float(self.cfg.method.density)
        with open(find_reference(self.cfg) / "rounds.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        return float(rows[snapshot]["density"]) if snapshot < len(rows) else None

    def initial_state(self) -> dict:
        from growth.seeds import rescale_fan_in

        self.density_target = self.target_density()
        if self.density_target is None:
            return {"budget": None, "not_applicable": f"the reference has no round {self.cfg.budget.snapshot}"}
        masks = self.build_masks()
        if self.cfg.method.rescale == "fan_in":
            rescale_fan_in(self.model, masks)
        self.masks = masks
        return {"budget": None}

    def resolve_budget(self) -> dict:
        cfg = self.cfg
        full = cfg.trainer.epochs
        d = self.current_density()
        info: dict = {"match": cfg.budget.match, "unit": cfg.budget.unit}
        if cfg.budget.epochs is not None:
            given = float(cfg.budget.epochs)
        elif cfg.budget.match is not None:
            ref = find_reference(cfg)
            info["reference"] = str(ref)
            if cfg.budget.unit == "epochs":
                growth = reference_growth_cost(ref, d, "cost_epochs")
                info["given_cost"] = growth + 1.0
                given = (growth + 1.0) * full
            else:
                flops_per_epoch = self.ledger.train_flops_per_sample * self.ctx.data.num_train
                growth = reference_growth_cost(ref, d, "cost_flops")
                info["given_cost"] = growth + flops_per_epoch * full
                given = growth / flops_per_epoch + full
        else:
            given = float(full)
        used = max(1, round(given))
        info.update(given_epochs=given, used_epochs=used, used_cost_epochs=used / full)
        return info

    def execute(self) -> None:
        if self.state.get("not_applicable"):
            self.ctx.progress(f"nothing to train: {self.state['not_applicable']}")
            return
        if self.state["budget"] is None:
            self.state["budget"] = self.resolve_budget()
        self.ledger.budget = dict(self.state["budget"])
        epochs = self.state["budget"]["used_epochs"]
        result = self.train_fixed("train", epochs, callbacks=self.callbacks(epochs))
        if not any(c.get("point") == "train" for c in self.state["curve"]):
            self.add_curve_point({"point": "train", "density": self.current_density(), **result, **self.point_cost(["train"])})
            self.checkpoint()

    def callbacks(self, epochs: int) -> list:
        return []

    def summary_fields(self) -> dict:
        point = next((c for c in self.state["curve"] if c.get("point") == "train"), None)
        return {
            "density": self.current_density() if not self.state.get("not_applicable") else None,
            "not_applicable": self.state.get("not_applicable"),
            "test_accuracy": point["test_accuracy"] if point else None,
            "val_accuracy": point["val_accuracy"] if point else None,
            "cost": self.summary_cost(point),
        }
