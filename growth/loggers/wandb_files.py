"""W&B's offline run files, read with W&B's own protobuf definitions, and one W&B run rebuilt from
a run directory's offline folders: `python -m growth.loggers.wandb_files RUN_DIR`.

Offline, every start of a run (the first, each resume or requeue) leaves its own
`<run dir>/wandb/offline-run-*` folder with the same run id. The logger gives every history row
an explicit step kept in the run's checkpoint, and no step is written twice over the attempts, so
the folders hold disjoint, consecutive pieces of one history. `wandb sync` of several such folders
does not join them (W&B's issue 3841: each replaces the last; `wandb sync --append` is meant for
disjoint histories but needs a server to check, which these tests do not have). The rebuild writes
one new offline folder holding the whole history in step order, the config, the last summary and
the last exit code, the performance-density table rebuilt from the run's curve.csv at its step:
`wandb sync` of that one folder uploads the run once.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

from growth.errors import ConfigError

_BLOCK = 32768  # W&B's transaction log: LevelDB's log format, 32 KiB blocks, 7-byte record headers
REBUILT_DIR = "wandb_rebuilt"


def read_wandb_records(path: Path) -> list:
    """Every complete record of a `run-<id>.wandb` file (a record still being written is left out)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if len(data) < 7:
        return []
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ConfigError(f"{path} is not a W&B transaction log")
    pos, chunks, pending = 7, [], b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (crc, length, kind) == (0, 0, 0):
            pos += left
            continue
        if pos + 7 + length > len(data):
            break
        chunk = data[pos + 7 : pos + 7 + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            break  # a torn tail: what came before it stands
        pos += 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
            pending = b""
    records = []
    for chunk in chunks:
        record = pb.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def _items(items) -> dict:
    out: dict = {}
    for i in items:
        path = [i.key] if i.key else list(i.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(i.value_json)
    return out


def parse_offline_run(folder: Path) -> dict:
    """One offline folder: its run record, config, history rows (with their step), metric
    definitions, summary and exit code."""
    (log_file,) = Path(folder).glob("run-*.wandb")
    out = {"history": [], "summary": {}, "config": {}, "metrics": [], "run": None, "exit_code": None}
    for r in read_wandb_records(log_file):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"].update(_items(r.run.config.update))
        elif kind == "config":
            out["config"].update(_items(r.config.update))
        elif kind == "history":
            row = _items(r.history.item)
            row.setdefault("_step", r.history.step.num)
            out["history"].append(row)
        elif kind == "summary":
            out["summary"].update(_items(r.summary.update))
        elif kind == "metric":
            out["metrics"].append(r.metric)
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def offline_folders(run_dir: Path) -> list[Path]:
    """The run's offline folders in the order they were started (W&B names them by start time)."""
    return sorted((Path(run_dir) / "wandb").glob("offline-run-*"))


def merged_history(parts: list[dict]) -> list[dict]:
    """Every history row of the attempts, by step; a step written by two attempts is an error."""
    by_step: dict[int, dict] = {}
    for part in parts:
        for row in part["history"]:
            step = int(row["_step"])
            if step in by_step:
                raise ConfigError(f"history step {step} is in two offline folders: these folders are not one run's attempts")
            by_step[step] = row
    return [by_step[s] for s in sorted(by_step)]


def curve_table(run_dir: Path):
    """The performance-density table from the run's curve.csv, not from a media file of one attempt."""
    import wandb

    with open(Path(run_dir) / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    return wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])


def rebuild(run_dir: Path) -> Path:
    """Write one offline W&B run holding the whole history of the run directory's offline folders."""
    import wandb

    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no summary.json)")
    folders = offline_folders(run_dir)
    if not folders:
        raise ConfigError(f"{run_dir} has no W&B offline folders (wandb/offline-run-*): it was not run with logger=wandb offline")
    parts = [parse_offline_run(f) for f in folders]
    ids = {p["run"].run_id for p in parts if p["run"] is not None}
    if len(ids) != 1:
        raise ConfigError(f"the offline folders of {run_dir} hold {len(ids)} W&B run ids {sorted(ids)}; expected one")
    history = merged_history(parts)
    first, last = parts[0]["run"], parts[-1]
    config = {}
    for part in parts:
        config.update(part["config"])
    out = run_dir / REBUILT_DIR
    shutil.rmtree(out, ignore_errors=True)  # a rebuild replaces the last one
    out.mkdir()
    run = wandb.init(project=first.project, entity=first.entity or None, group=first.run_group or None,
                     job_type=first.job_type or None, tags=list(first.tags), name=first.display_name, id=first.run_id,
                     mode="offline", dir=str(out), config=config, reinit="create_new",
                     settings=wandb.Settings(console="off", quiet=True))
    for metric in last["metrics"]:
        name = metric.glob_name or metric.name
        if name and metric.step_metric:
            run.define_metric(name, step_metric=metric.step_metric)
        elif name:
            run.define_metric(name)
    for row in history:
        data = {k: v for k, v in row.items() if not k.startswith("_") and not (isinstance(v, dict) and "_type" in v)}
        if isinstance(row.get("performance_density"), dict):  # at its own step, from the records
            data["performance_density"] = curve_table(run_dir)
        if data:
            run.log(data, step=int(row["_step"]))
    summary = {k: v for k, v in last["summary"].items() if not (isinstance(v, dict) and "_type" in v)}
    run.summary.update(summary)
    run.finish(exit_code=last["exit_code"] or 0)
    (folder,) = out.glob("wandb/offline-run-*")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m growth.loggers.wandb_files", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory run with logger=wandb (offline)")
    args = parser.parse_args(argv)
    try:
        folder = rebuild(args.run_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = len(offline_folders(args.run_dir))
    print(f"wrote {folder}: the whole history of {n} offline folder(s) as one run; upload it with: wandb sync {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
