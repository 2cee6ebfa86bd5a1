"""Run records on disk: atomic writes, checksummed checkpoints, the run directory and its lock.

Every file is written to a temporary name in the same directory, flushed, fsynced and renamed
over the target, so a reader (or a relaunch after a kill) never sees half a file.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import math
import os
import signal
import socket
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from growth import distributed

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
_MAGIC = b"GROWTHCKPT1\n"
TERMINAL_STATUSES = ("finished", "diverged")
_UMASK = os.umask(0)
os.umask(_UMASK)
# Keys that never change what a run computes: excluded from the run's identity.
IDENTITY_EXCLUDED = (
    "output", "logger", "trainer.device", "trainer.cpu_threads", "trainer.dist_timeout_min", "dry_run", "study",
    "dataset.root", "dataset.download", "dataset.num_workers",
)


# Test hook (tests/test_faults.py): GROWTH_FAULT_KILL_WRITE="<file name>:<n>" makes this process
# SIGKILL itself halfway through writing the temporary file of its n-th atomic write of that file
# (for checkpoint.pt: after the previous checkpoint was rotated), so a kill mid-write is testable.
_fault_writes: dict[str, int] = {}


def _fault_kill_here(path: Path) -> bool:
    name, _, nth = os.environ.get("GROWTH_FAULT_KILL_WRITE", "").rpartition(":")
    if path.name != name:
        return False
    _fault_writes[name] = _fault_writes.get(name, 0) + 1
    return _fault_writes[name] == int(nth)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    if not distributed.is_writer():
        return  # one run trained by several processes: rank 0 alone writes its records
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; records are meant to be read by collaborators (umask applies).
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            if _fault_kill_here(path):
                f.write(data[: len(data) // 2])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            # e.g. ENOSPC from write or fsync: say which file could not be written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
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
    if not distributed.is_writer():
        return
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


def load_checkpoint(run_dir: str | Path, problems: list[str] | None = None) -> dict | None:
    """The newest intact checkpoint, or None. A damaged one is never loaded: it is reported (a
    warning, the log, and `problems` for the run's records) and the previous one is used."""
    run_dir = Path(run_dir)
    damaged: list[str] = []
    found = None
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            found = _read_checkpoint(path)
        except Exception as exc:  # any damage: fall back to the previous checkpoint
            damaged.append(f"checkpoint {path} is unusable ({exc})")
            continue
        outcome = f"resumed from {name} instead"
        break
    else:
        outcome = "no intact checkpoint is left: the run starts over"
    for message in damaged:
        message = f"{message}; {outcome}"
        warnings.warn(message, stacklevel=2)
        log.warning(message)
        if problems is not None:
            problems.append(message)
    return found


# ---------------------------------------------------------------- run directory


def identity_config(cfg: DictConfig) -> dict:
    """The resolved config minus the keys that do not change what a run computes."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("defaults", None)
    for key in IDENTITY_EXCLUDED:
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
        if owner == host and pid.isdigit() and not _pid_alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_identity(pid: int) -> str | None:
    """Boot id and start time of a process (Linux), so a lock outlives neither a reboot nor pid reuse."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


class RunLock:
    """Exclusive ownership of a run directory; a lock left by a dead process is taken over."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "run.lock"
        self.held = False

    def _holder_alive(self, text: str) -> bool:
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            info = None
        if not isinstance(info, dict):
            return False  # unreadable: stale (a lock is created with its content, see _publish)
        job = os.environ.get("SLURM_JOB_ID")
        if job and info.get("slurm_job_id") == job:
            return False  # our own job, requeued after preemption: the old holder is gone
        if info.get("host") != socket.gethostname():
            return True  # cannot check another host's processes: respect the lock
        try:
            os.kill(int(info["pid"]), 0)
        except (ProcessLookupError, ValueError, KeyError, TypeError):
            return False
        except PermissionError:
            pass
        # A pid reused by another process (e.g. after a reboot) does not hold the lock.
        now = _process_identity(int(info["pid"]))
        return info.get("process") is None or now is None or now == info["process"]

    def _describe(self, text: str) -> str:
        try:
            info = json.loads(text)
            return f"pid {info.get('pid')} on host {info.get('host')}, SLURM job {info.get('slurm_job_id') or 'none'}"
        except (json.JSONDecodeError, AttributeError):
            return text.strip()

    def acquire(self) -> None:
        """Create the lock with its content in one step (a hard link of a file of our own), so no
        other process ever reads it half-written; a lock whose holder is dead is taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()}.{os.getpid()}"
        self._mine = json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "process": _process_identity(os.getpid()),
        })
        claim = self.path.with_name(f".{self.path.name}.{me}.claim")
        claim.write_text(self._mine)
        try:
            for _ in range(5):
                if not self._publish(claim):
                    self._take_over_if_stale(me)
                    continue
                self.held = True
                remove_stale_temporaries(self.path.parent)
                return
        finally:
            claim.unlink(missing_ok=True)
        raise RuntimeError(f"could not take the lock {self.path}: other processes keep taking it")

    def _publish(self, claim: Path) -> bool:
        """Create the lock with our content; False when a lock is there already."""
        try:
            os.link(claim, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS):
                raise
        # A file system without hard links: create, then write.
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self._mine)
        return True

    def _take_over_if_stale(self, me: str) -> None:
        try:
            seen = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return  # released meanwhile
        if self._holder_alive(seen):
            raise RuntimeError(
                f"run directory {self.path.parent} is in use by another process ({self._describe(seen)}); "
                f"if that process is gone for good, delete {self.path}"
            )
        # Move the stale lock out of the way under a name of our own, and make sure it is the one
        # judged stale: another process may have taken the lock over in the meantime.
        grabbed = self.path.with_name(f".{self.path.name}.{me}.stale")
        try:
            os.replace(self.path, grabbed)
        except FileNotFoundError:
            return
        try:
            if grabbed.read_text(errors="replace") != seen:
                os.link(grabbed, self.path)  # a live process's fresh lock: put it back
                return
        except FileExistsError:
            return
        finally:
            grabbed.unlink(missing_ok=True)
        log.warning("took over %s, left by a process that is gone (%s)", self.path, self._describe(seen))

    def release(self) -> None:
        if self.held:
            try:
                if self.path.read_text(errors="replace") == self._mine:
                    self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
