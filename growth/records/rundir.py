"""The run directory: what its summary says, and the clean-up after a killed process.

(The directory's name, from the run's identity, is growth.records.identity.)
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from omegaconf import DictConfig

from growth.records.atomic import read_json
from growth.records.processes import pid_alive

# A run in one of these states is done: a relaunch reports it and runs nothing.
TERMINAL_STATUSES = ("finished", "diverged")


def run_fields(cfg: DictConfig) -> dict:
    """What every summary.json starts with: which method, data, model and seed it is."""
    return {"method": cfg.method.name, "dataset": cfg.dataset.name, "model": cfg.model.name, "seed": int(cfg.seed)}


def read_summary(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left in a run directory
    (called by the lock holder, the only process that writes there)."""
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / "snapshots"):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    # A process killed while taking the lock leaves its claim (or a stale lock it moved aside),
    # named .run.lock.<host>.<pid>.claim|stale; other processes may be taking it right now.
    host = socket.gethostname()
    for leftover in [*run_dir.glob(".run.lock.*.claim"), *run_dir.glob(".run.lock.*.stale")]:
        owner, _, pid = leftover.name[len(".run.lock."):].rsplit(".", 1)[0].rpartition(".")
        if owner == host and pid.isdigit() and not pid_alive(int(pid)):
            leftover.unlink(missing_ok=True)
