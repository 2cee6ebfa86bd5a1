"""``logger=wandb``: each run mirrored to one Weights & Biases run (offline by default).

W&B is imported only when this logger is built; any W&B error turns the logger into a no-op
after one warning, and the run directory's records, the source of truth, stay complete.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from growth.config import LoggerConfig
from growth.config.checks import key, name_or_null, nonempty, registered
from growth.kinds import LOGGERS
from growth.loggers.base import RunLogger, flat_config

# The package's logger name, as before the split (tests filter on "growth.loggers").
log = logging.getLogger("growth.loggers")


class WandbMode(enum.Enum):
    # An enum, so a misspelt mode fails when the config is composed, before any run starts.
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class WandbLoggerConfig(LoggerConfig):
    name: str = key("wandb", registered("logger"))
    project: str = key("growth-density", nonempty("a W&B project name"))
    # null: the W&B default entity of the logged-in user (online) or none (offline).
    entity: Optional[str] = key(None, name_or_null())
    # A study or sweep name, so a dashboard can group its runs.
    group: Optional[str] = key(None, name_or_null())
    # null: the method name (pwmpr, rg, imp_c, ...).
    job_type: Optional[str] = key(None, name_or_null())
    tags: list[str] = field(default_factory=list)
    # offline: files under `dir`, uploaded later with `wandb sync`; online only when asked.
    mode: WandbMode = WandbMode.offline
    # null: the run directory (W&B writes its files to <dir>/wandb/).
    dir: Optional[str] = key(None, name_or_null("null (the run directory) or a directory"))


WANDB_ID_FILE = "wandb_id.txt"
# The history steps already written by earlier attempts of this run (one past the last): a resumed
# run redoes the work after its checkpoint, and its steps below this mark are not logged again.
WANDB_STEP_FILE = "wandb_step.txt"
_RESERVED = re.compile(r"[^A-Za-z0-9._-]")


def derive_wandb_id(run_dir: Path) -> str:
    """A W&B run id from the run directory: its name (unique under a results root, readable on a
    dashboard) plus a short hash of its absolute path, so the same configuration run under two
    results roots gives two W&B runs instead of one mixed history."""
    run_dir = Path(run_dir)
    name = _RESERVED.sub("-", run_dir.name)[:52] or "run"
    digest = hashlib.sha256(str(run_dir.resolve()).encode("utf-8")).hexdigest()[:8]
    return f"{name}-{digest}"


def wandb_run_id(run_dir: Path) -> str:
    """The id stored in the run directory, or a new one derived from it (then stored): a resumed
    or requeued job continues the same W&B run even if the directory has moved since."""
    from growth.records import atomic_write_text

    path = Path(run_dir) / WANDB_ID_FILE
    if path.exists():
        stored = path.read_text(encoding="utf-8").strip()
        if stored and not _RESERVED.search(stored):
            return stored
    run_id = derive_wandb_id(run_dir)
    atomic_write_text(path, run_id + "\n")
    return run_id


def logged_steps(run_dir: Path) -> int:
    path = Path(run_dir) / WANDB_STEP_FILE
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return 0


def _phase_key(phase: str) -> str:
    # "extensive:3" -> "extensive_3": W&B groups panels by the part before the first "/".
    return re.sub(r"[^A-Za-z0-9_.-]", "_", phase)


def _history_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return None  # strings (stop_reason, point names) go to the summary or the table instead


@LOGGERS.register("wandb", schema=WandbLoggerConfig)
class WandbLogger(RunLogger):
    """One W&B run per framework run. Every W&B call goes through :meth:`_guard`: the first
    failure logs one warning and turns every later hook into a no-op."""

    def __init__(self, cfg, run_dir: Path):
        self.lcfg = cfg.logger
        self.run_dir = Path(run_dir)
        self.run = None
        self.failed = False
        self._phases: set[str] = set()
        self._guard("init", self._start, cfg)

    # ------------------------------------------------------------ plumbing

    def _guard(self, what: str, fn: Callable, *args) -> Any:
        if self.failed:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # a tracker problem must never reach the training loop
            self.failed = True
            self.run = None
            log.warning(
                "W&B logging is off for the rest of run %s: %s failed (%s: %s); the run directory's records are complete",
                self.run_dir.name, what, type(exc).__name__, exc,
            )
            return None

    def _mode(self) -> str:
        mode = self.lcfg.mode
        mode = mode.value if isinstance(mode, enum.Enum) else str(mode)
        # The environment may always turn W&B off, never on.
        if os.environ.get("WANDB_MODE") == "disabled" or os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
            return "disabled"
        return mode

    def _start(self, cfg) -> None:
        mode = self._mode()
        try:
            import wandb  # only here: runs without logger=wandb never import it
        except ImportError as exc:
            raise ImportError(f"logger=wandb needs the wandb package (pip install wandb): {exc}") from None

        if mode == "disabled":
            run_id = None
        else:
            run_id = wandb_run_id(self.run_dir)
        self.mode = mode
        self.logged_until = logged_steps(self.run_dir)
        wandb_dir = Path(self.lcfg.dir).expanduser() if self.lcfg.dir else self.run_dir
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.lcfg.project,
            entity=self.lcfg.entity,
            group=self.lcfg.group,
            job_type=self.lcfg.job_type or cfg.method.name,
            tags=list(self.lcfg.tags),
            name=self.run_dir.name,
            id=run_id,
            resume="allow",
            mode=mode,
            dir=str(wandb_dir),
            config={**flat_config(cfg), "run_dir": str(self.run_dir)},
            allow_val_change=True,  # a resumed run sends its config again
            reinit="create_new",  # never touch another run this process may hold
            # console off: the job's own log and the records hold the output; no stdout wrapping.
            settings=wandb.Settings(console="off", quiet=True),
        )
        self.run.define_metric("growth/density")
        self.run.define_metric("growth/*", step_metric="growth/density")
        self.run.define_metric("curve/density")
        self.run.define_metric("curve/*", step_metric="curve/density")

    def _log(self, data: dict) -> None:
        """One history row at the next step: written once over every attempt of the run."""
        if self.step >= self.logged_until:
            self.run.log(data, step=self.step)
            self.logged_until = self.step + 1
            if self.mode != "disabled":
                from growth.records import atomic_write_text

                atomic_write_text(self.run_dir / WANDB_STEP_FILE, f"{self.logged_until}\n")
        self.step += 1

    # ------------------------------------------------------------ hooks

    def log_round(self, row: dict) -> None:
        if self.run is not None:
            self._guard("log_round", self._log_round, row)

    def _log_round(self, row: dict) -> None:
        data = {}
        for key, value in row.items():
            value = _history_value(value)
            if value is None:
                continue
            if key.startswith("layer_density:"):
                data["growth/layer_density/" + key.split(":", 1)[1]] = value
            else:
                data["growth/" + key] = value
        self._log(data)
        if row.get("stop"):
            self.run.summary["growth/stop_reason"] = row.get("stop_reason", "")

    def log_epoch(self, phase: str, epoch: int, metrics: dict) -> None:
        if self.run is not None:
            self._guard("log_epoch", self._log_epoch, phase, epoch, metrics)

    def _log_epoch(self, phase: str, epoch: int, metrics: dict) -> None:
        key = _phase_key(phase)
        if key not in self._phases:
            self.run.define_metric(f"{key}/epoch")
            self.run.define_metric(f"{key}/*", step_metric=f"{key}/epoch")
            self._phases.add(key)
        data = {f"{key}/epoch": epoch}
        data.update({f"{key}/{k}": v for k, v in metrics.items() if _history_value(v) is not None})
        self._log(data)

    def log_records(self, summary: dict, curve: list[dict]) -> None:
        if self.run is not None:
            self._guard("log_records", self._log_records, summary, curve)

    def _log_records(self, summary: dict, curve: list[dict]) -> None:
        import wandb

        self.run.summary.update({k: v for k, v in summary.items() if k != "run_dir"})
        columns: list[str] = []
        for row in curve:
            columns.extend(k for k in row if k not in columns)
        if curve:
            table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in curve])
            self._log({"performance_density": table})
        for row in curve:
            point = {f"curve/{k}": _history_value(v) for k, v in row.items()}
            self._log({k: v for k, v in point.items() if v is not None})

    def finish(self, status: str) -> None:
        if self.run is not None:
            self._guard("finish", self._finish, status)
        self.run = None

    def _finish(self, status: str) -> None:
        from growth.records import read_summary

        self.run.summary["status"] = status
        on_disk = read_summary(self.run_dir) or {}
        if status != "finished" and on_disk.get("error"):
            self.run.summary["error"] = str(on_disk["error"])
            # The traceback stays in summary.json; the dashboard gets where it happened.
            self.run.summary["where"] = {k: v for k, v in (on_disk.get("where") or {}).items() if k != "traceback"}
        self.run.finish(exit_code=0 if status == "finished" else 1)
