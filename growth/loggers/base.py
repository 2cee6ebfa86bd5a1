"""The logger interface, the no-op logger ``none`` and the lookup of the configured one.

A logger is registered on growth.kinds.LOGGERS (``logger.name`` names it) as a builder
``(cfg, run_dir) -> RunLogger`` with its schema, a subclass of growth.config.LoggerConfig; a new
logger is one new module in this package plus conf/logger/<name>.yaml naming ``<name>_schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from growth.config import LoggerConfig
from growth.kinds import LOGGERS


class RunLogger:
    """No-op logger; subclasses mirror records somewhere else.

    `step` is the next history step. The run keeps it in its checkpoint and hands it back on
    resume (`resume_at`), so a resumed or requeued run continues the history where its checkpoint
    left it instead of starting again at 0."""

    step: int = 0

    def resume_at(self, step: int) -> None:
        self.step = int(step)

    def log_round(self, row: dict) -> None: ...

    def log_epoch(self, phase: str, epoch: int, metrics: dict) -> None: ...

    def log_records(self, summary: dict, curve: list[dict]) -> None: ...

    def finish(self, status: str) -> None: ...


@LOGGERS.register("none", schema=LoggerConfig)
def no_logger(cfg, run_dir: Path) -> RunLogger:
    """``logger=none``: local run records only."""
    return RunLogger()


def build_logger(cfg, run_dir: Path) -> RunLogger:
    return LOGGERS.get(cfg.logger.name)(cfg, Path(run_dir))


def flat_config(cfg) -> dict[str, Any]:
    """The resolved config with dotted keys (``growth.timing.epochs``), plus the few keys a
    dashboard filters by first (method, dataset, model, seed, density)."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container.pop("defaults", None)
    flat = flatten(container, ".")
    from growth.kinds import METHODS

    m = cfg.method
    family = METHODS.entry(m.name).info.get("family") if m.name in METHODS else None
    density = m.density if "density" in m else (1.0 if family == "dense" else None)
    flat.update(method=m.name, dataset=cfg.dataset.name, model=cfg.model.name, seed=int(cfg.seed), density=density)
    return flat


def flatten(obj: Mapping, sep: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, sep, name + sep))
        else:
            out[name] = value
    return out
