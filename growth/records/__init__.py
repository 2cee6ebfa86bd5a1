"""Run records on disk, one module per concern; every public name is re-exported here, so
``from growth import records; records.X`` reads as it always did (and a test that patches
``records.save_checkpoint`` or ``records.atomic_torch_save`` patches what the methods call).

| module | what |
|---|---|
| ``atomic`` | atomic writes (bytes, text, JSON, CSV, ``torch.save``) and ``read_json`` |
| ``faults`` | the fault-injection hook the atomic writer calls (a no-op outside tests/test_faults.py) |
| ``checkpoints`` | checksummed checkpoints with the previous one as a fallback |
| ``rundir`` | a run directory's summary and the clean-up after a killed process |
| ``identity`` | a run's identity and the directory named by it |
| ``lock`` | the run lock (``processes``: the liveness checks it and the clean-up share) |

Every file is written to a temporary name in the same directory, flushed, fsynced and renamed
over the target, so a reader (or a relaunch after a kill) never sees half a file; in a run
trained by several processes only rank 0 writes (growth.distributed).
"""

from growth.records.atomic import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from growth.records.checkpoints import CHECKPOINT, PREVIOUS_CHECKPOINT, _read_checkpoint, load_checkpoint, save_checkpoint
from growth.records.identity import IDENTITY_EXCLUDED, non_default_settings, run_dir_for, run_identity, run_name
from growth.records.lock import RunLock
from growth.records.processes import process_identity
from growth.records.rundir import TERMINAL_STATUSES, read_summary, remove_stale_temporaries, run_fields

# Internals tests/test_faults.py reaches through the package, by their names before the split:
# `_read_checkpoint` (one checkpoint file, no fallback) and `_process_identity` (what a lock records).
_process_identity = process_identity

__all__ = [
    "CHECKPOINT", "IDENTITY_EXCLUDED", "PREVIOUS_CHECKPOINT", "TERMINAL_STATUSES", "RunLock", "atomic_torch_save",
    "atomic_write_bytes", "atomic_write_csv", "atomic_write_json", "atomic_write_text", "non_default_settings",
    "load_checkpoint", "process_identity", "read_json", "read_summary", "remove_stale_temporaries", "run_dir_for",
    "run_fields", "run_identity", "run_name", "save_checkpoint",
]
