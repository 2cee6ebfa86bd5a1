"""Run records on disk: atomic writes, checksummed checkpoints, the run directory and its lock.

Every file is written to a temporary name in the same directory, flushed, fsynced and renamed
over the target, so a reader (or a relaunch after a kill) never sees half a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import socket
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
_MAGIC = b"GROWTHCKPT1\n"
TERMINAL_STATUSES = ("finished", "diverged")
_UMASK = os.umask(0)
os.umask(_UMASK)
# Keys that never change what a run computes: excluded from the run's identity.
_IDENTITY_EXCLUDED = (
    "output", "logger", "trainer.device", "trainer.cpu_threads", "dry_run", "study",
    "dataset.root", "dataset.download", "dataset.num_workers",
)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; records are meant to be read by collaborators (umask applies).
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if torch.is_tensor(value):
        return _jsonable(value.tolist())
    return value


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def atomic_write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(run_dir: str | Path, state: Mapping[str, Any]) -> None:
    """Checksummed, atomic; the previous checkpoint is kept as a fallback."""
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode("ascii")
    current = run_dir / CHECKPOINT
    if current.exists():
        os.replace(current, run_dir / PREVIOUS_CHECKPOINT)
    atomic_write_bytes(current, _MAGIC + digest + b"\n" + payload)


def _read_checkpoint(path: Path) -> dict:
    data = path.read_bytes()
    header_len = len(_MAGIC) + 64 + 1
    if not data.startswith(_MAGIC) or len(data) < header_len:
        raise ValueError("not a checkpoint of this framework (bad header)")
    digest = data[len(_MAGIC) : len(_MAGIC) + 64].decode("ascii", "replace")
    payload = data[header_len:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError("checksum mismatch (truncated or corrupted)")
    # weights_only: nothing from a results directory is ever executed.
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


def load_checkpoint(run_dir: str | Path) -> dict | None:
    """The newest intact checkpoint, or None. A damaged one is reported and skipped, never loaded."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            return _read_checkpoint(path)
        except Exception as exc:  # any damage: fall back to the previous checkpoint
            message = f"checkpoint {path} is unusable ({exc}); falling back to an older one"
            warnings.warn(message, stacklevel=2)
            log.warning(message)
    return None


# ---------------------------------------------------------------- run directory


def identity_config(cfg: DictConfig) -> dict:
    """The resolved config minus the keys that do not change what a run computes."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("defaults", None)
    for key in _IDENTITY_EXCLUDED:
        node = container
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part, {})
        node.pop(parts[-1], None)
    return container


def run_fields(cfg: DictConfig) -> dict:
    """What every summary.json starts with: which method, data, model and seed it is."""
    return {"method": cfg.method.name, "dataset": cfg.dataset.name, "model": cfg.model.name, "seed": int(cfg.seed)}


def run_identity(cfg: DictConfig) -> str:
    text = json.dumps(identity_config(cfg), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def run_dir_for(cfg: DictConfig) -> Path:
    if cfg.output.run_dir:
        return Path(cfg.output.run_dir)
    name = f"{cfg.method.name}-{cfg.dataset.name}-{cfg.model.name}-s{cfg.seed}-{run_identity(cfg)}"
    return Path(cfg.output.root) / name


def read_summary(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


class RunLock:
    """Exclusive ownership of a run directory; a lock left by a dead process is taken over."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "run.lock"
        self.held = False

    def _holder_alive(self) -> bool:
        try:
            info = read_json(self.path)
        except (OSError, json.JSONDecodeError):
            return False  # half-written or unreadable: treat as stale
        job = os.environ.get("SLURM_JOB_ID")
        if job and info.get("slurm_job_id") == job:
            return False  # our own job, requeued after preemption: the old holder is gone
        if info.get("host") != socket.gethostname():
            return True  # cannot check another host's processes: respect the lock
        try:
            os.kill(int(info["pid"]), 0)
        except (ProcessLookupError, ValueError, KeyError):
            return False
        except PermissionError:
            return True
        return True

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_alive():
                    info = self.path.read_text(errors="replace").strip()
                    raise RuntimeError(
                        f"run directory {self.path.parent} is in use by another process ({info}); "
                        f"if that process is gone for good, delete {self.path}"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}, f)
            self.held = True
            return
        raise RuntimeError(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
