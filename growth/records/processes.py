"""Is a process alive, and is it still the same process: what the run lock and the clean-up of
its leftovers ask about the process named in a lock or a claim (a module of its own, so that
both can ask without importing each other)."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_identity(pid: int) -> str | None:
    """Boot id and start time of a process (Linux), so a lock outlives neither a reboot nor pid reuse."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None
