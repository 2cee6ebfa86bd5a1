"""Checksummed checkpoints: a damaged one is never loaded, the previous one is kept as a fallback.

File format: a magic line, the SHA-256 of the payload in hex and a newline, then the payload
(``torch.save`` of the state dict), written atomically (growth.records.atomic).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from growth import distributed
from growth.records.atomic import atomic_write_bytes
from growth.errors import safe_text

# The package's logger, as before the split (runs and tests filter on "growth.records").
log = logging.getLogger("growth.records")

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
_MAGIC = b"GROWTHCKPT1\n"


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
            damaged.append(safe_text(f"checkpoint {path} is unusable ({exc})"))
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
