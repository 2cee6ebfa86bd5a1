"""Run loggers: mirrors of the run records to an experiment tracker.

The run directory stays the source of truth; a logger only mirrors what the records hold, and a
failing logger must never stop or slow training. Methods call the hooks below at their
boundaries (a growth round, an epoch of fixed-length training, the end of the run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class RunLogger:
    """No-op logger; subclasses mirror records somewhere else."""

    def log_round(self, row: dict) -> None: ...

    def log_epoch(self, phase: str, epoch: int, metrics: dict) -> None: ...

    def log_records(self, summary: dict, curve: list[dict]) -> None: ...

    def finish(self, status: str) -> None: ...


LOGGERS: dict[str, Callable[..., RunLogger]] = {"none": lambda cfg, run_dir: RunLogger()}


def register_logger_schemas(cs) -> None:
    """Store the schema of every logger option with settings of its own."""


def build_logger(cfg, run_dir: Path) -> RunLogger:
    return LOGGERS[cfg.logger.name](cfg, Path(run_dir))
