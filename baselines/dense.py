"""Dense: the reference run. One dense run of trainer.epochs epochs is one unit of cost."""

from __future__ import annotations

from growth.config import MethodConfig
from growth.fixed import FixedDensityRun
from growth.methods import register_method


@register_method("dense", schema=MethodConfig, family="dense", label="dense", color="black", order=90)
class DenseRun(FixedDensityRun):
    def initial_state(self) -> dict:
        self.density_target = 1.0
        self.masks = None  # no masks: every weight trains
        return {"budget": None}

    @classmethod
    def precheck(cls, cfg) -> None:
        pass

    def resolve_budget(self) -> dict:
        epochs = self.cfg.budget.epochs if self.cfg.budget.epochs is not None else self.cfg.trainer.epochs
        used = max(1, round(float(epochs)))
        return {"match": None, "unit": "epochs", "given_epochs": float(epochs), "used_epochs": used,
                "used_cost_epochs": used / self.cfg.trainer.epochs}
