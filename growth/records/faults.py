"""Fault injection for tests/test_faults.py: the one seam the atomic writer calls.

GROWTH_FAULT_KILL_WRITE="<file name>:<n>" makes this process SIGKILL itself halfway through
writing the temporary file of its n-th atomic write of that file (for checkpoint.pt: after the
previous checkpoint was rotated), so a kill mid-write is testable. Unset, as it is outside those
tests, the hook does nothing. The variable is read at every write, not at import: the fault
tests set it in a forked child of a process that imported everything already.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import BinaryIO

KILL_WRITE_ENV = "GROWTH_FAULT_KILL_WRITE"

# Atomic writes seen so far of the file the variable names, by file name (this process only).
_writes: dict[str, int] = {}


def before_write(path: Path, handle: BinaryIO, data: bytes) -> None:
    """Called by the atomic writer with the temporary file open, before it writes `data`."""
    name, _, nth = os.environ.get(KILL_WRITE_ENV, "").rpartition(":")
    if path.name != name:
        return
    _writes[name] = _writes.get(name, 0) + 1
    if _writes[name] == int(nth):
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
