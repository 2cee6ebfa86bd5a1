"""The run lock: one process at a time owns a run directory, and a lock left by a dead process
(killed, preempted, rebooted, or a pid since reused) is taken over instead of blocking forever.

The lock file ``run.lock`` holds its holder's pid, host, SLURM job and process identity. It is
created with its content in one step, a hard link of a claim file of our own
(``.run.lock.<host>.<pid>.claim``), so no other process ever reads it half-written; a stale lock
is moved aside under ``.run.lock.<host>.<pid>.stale`` before it is judged, so two processes
taking it over at once cannot both win.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from pathlib import Path

from growth.records.processes import process_identity
from growth.records.rundir import remove_stale_temporaries

# The package's logger, as before the split (runs and tests filter on "growth.records").
log = logging.getLogger("growth.records")


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
        now = process_identity(int(info["pid"]))
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
            "process": process_identity(os.getpid()),
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
