"""Run records (local run directories, or W&B runs) -> one tidy table.

One row per run and density point. ``phase`` says what the point is:

- ``growth round``: a growth round (validation accuracy after rough training, cumulative growth cost);
- ``extensive``: a snapshot of a growth run after extensive training (test accuracy);
- ``level``: a pruning level; ``train``: the one training of a fixed-density or dense run;
- ``run``: a placeholder for a run without points of its own (diverged, failed, running, not run).

Only finished runs give points (``extensive``, ``level``, ``train`` rows are the curves); every
other run appears once, as a ``run`` row with its status and error. Every row carries what its
run's records say of the method (``family``, ``label``, ...: see :mod:`analysis.methods`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.methods import CURVE_PHASES, META_COLUMNS, phase_of, record_meta
from growth.records.identity import IDENTITY_EXCLUDED

COLUMNS = [
    "method", "dataset", "model", "seed", "density", "test_accuracy", "val_accuracy", "cost_epochs",
    "cost_flops", "wall_seconds", "phase", "discovered", "status", "run_dir",
    # beyond the core columns: what the figures need without going back to the files
    "variant", "timing", "round", "batches", "stop_reason", "error",
    # what the records say of the method (written by the method; inferred for older records)
    *META_COLUMNS,
]
__all__ = ["COLUMNS", "CURVE_PHASES", "load_table", "load_wandb_table", "read_config", "flatten", "run_rows", "finish_table"]
# Settings that differ between runs of one comparison without making them different variants.
_NOT_VARIANT = re.compile(
    r"^(seed|output\..*|logger\..*|study\..*|trainer\.device|trainer\.cpu_threads|budget\..*|method\.density|dataset\.root|run_dir|"
    r"method|dataset|model|density|_wandb.*)$"
)


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


# ---------------------------------------------------------------- small readers


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def read_config(run_dir: Path) -> dict:
    """The run's resolved config.yaml as a flat dict with dotted keys ({} when absent)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return flatten(data)


def flatten(obj: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _num(value: Any) -> float:
    """A CSV/JSON cell as a float; empty, None or text -> NaN."""
    if value is None or value == "":
        return math.nan
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _same_density(a: Any, b: Any) -> bool:
    a, b = _num(a), _num(b)
    return math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def timing_label(config: Mapping[str, Any]) -> str:
    """The growth round timing schedule in words (empty for methods that do not grow)."""
    mode = config.get("growth.timing.mode")
    if config.get("method.score") is None or mode is None:
        return ""
    if mode == "adaptive":
        return (f"adaptive (eval every {config.get('growth.timing.eval_every')} batches, "
                f"patience {config.get('growth.timing.patience')}, max {config.get('growth.timing.max_epochs')} epochs)")
    return f"fixed {config.get('growth.timing.epochs')} epochs/round"


_phase_of = phase_of  # a curve row's phase (see analysis.methods.phase_of)


# ---------------------------------------------------------------- one run -> rows


def run_rows(
    summary: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]],
    curve: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
    run_dir: str,
) -> list[dict]:
    """The table rows of one run, from its records (the same code for local and W&B runs)."""
    status = str(summary.get("status") or "unknown")
    method = summary.get("method") or config.get("method.name") or config.get("method")
    base = {
        "method": method,
        "dataset": summary.get("dataset") or config.get("dataset.name") or config.get("dataset"),
        "model": summary.get("model") or config.get("model.name") or config.get("model"),
        "seed": summary.get("seed", config.get("seed")),
        "status": status,
        "run_dir": run_dir,
        "timing": timing_label(config),
        "stop_reason": summary.get("stop_reason") or "",
        "error": summary.get("error") or "",
        **record_meta(method, summary, rounds, curve),
    }
    if status != "finished":
        return [{**base, "phase": "run", "density": _num(summary.get("density")), "discovered": False}]
    discovered = summary.get("discovered_density")
    rows = []
    for r in rounds:
        row = {
            **base,
            "phase": "growth round",
            "density": _num(r.get("density")),
            "val_accuracy": _num(r.get("proxy_accuracy")),
            "cost_epochs": _num(r.get("cost_epochs")),
            "cost_flops": _num(r.get("cost_flops")),
            "wall_seconds": _num(r.get("wall_seconds")),
            "round": _num(r.get("round")),
            "batches": _num(r.get("batches")),
            "discovered": _same_density(r.get("density"), discovered),
        }
        row.update({k: _num(v) for k, v in r.items() if k.startswith("layer_density:")})
        rows.append(row)
    for c in curve:
        phase = phase_of(c)
        rows.append(
            {
                **base,
                "phase": phase,
                "density": _num(c.get("density")),
                "test_accuracy": _num(c.get("test_accuracy")),
                "val_accuracy": _num(c.get("val_accuracy")),
                "cost_epochs": _num(c.get("cost_epochs")),
                "cost_flops": _num(c.get("cost_flops")),
                "wall_seconds": _num(c.get("wall_seconds")),
                "round": _num(c.get("level") if phase == "level" else c.get("round")),
                "discovered": phase == "extensive" and _same_density(c.get("density"), discovered),
            }
        )
    if not rows:
        rows.append({**base, "phase": "run", "density": math.nan, "discovered": False})
    return rows


def local_run(run_dir: Path) -> tuple[list[dict], dict]:
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    summary = _read_json(run_dir / "summary.json") or {"status": "no summary"}
    rows = run_rows(summary, _read_csv(run_dir / "rounds.csv"), _read_csv(run_dir / "curve.csv"), config, str(run_dir))
    return rows, config


# ---------------------------------------------------------------- finding runs


def _is_run_dir(path: Path) -> bool:
    return (path / "summary.json").exists() or (path / "config.yaml").exists()


def _job_placeholder(job: Mapping[str, Any]) -> dict:
    label = str(job.get("label", ""))
    parts = label.split("/")
    seed = next((int(p[1:]) for p in parts[1:] if re.fullmatch(r"s\d+", p)), None)
    return {
        "method": parts[0] or None, "seed": seed, "status": job.get("status") or "not run", "phase": "run",
        "density": math.nan, "discovered": False, "run_dir": job.get("run_dir"), "error": job.get("error") or "",
        "timing": "", "stop_reason": "",
    }


class Sources:
    """What the inputs were: run directories, and study.json files where a study was given."""

    def __init__(self) -> None:
        self.run_dirs: list[Path] = []
        self.placeholders: list[dict] = []
        self.studies: dict[str, dict] = {}
        self._seen: set[Path] = set()

    def add_run(self, path: Path) -> None:
        key = path.resolve()
        if key not in self._seen:
            self._seen.add(key)
            self.run_dirs.append(path)

    def add(self, path: Path) -> None:
        path = Path(path)
        if (path / "study.json").exists():
            study = _read_json(path / "study.json") or {}
            self.studies[str(path)] = study
            for job in study.get("jobs", []):
                run_dir = job.get("run_dir")
                if run_dir and _is_run_dir(Path(run_dir)):
                    self.add_run(Path(run_dir))
                else:
                    self.placeholders.append(_job_placeholder(job))
        elif _is_run_dir(path):
            self.add_run(path)
        elif path.is_dir():
            children = sorted(p for p in path.iterdir() if p.is_dir() and _is_run_dir(p))
            if not children:
                raise ValueError(f"{path}: no run directories in it (a run directory holds summary.json and config.yaml)")
            for child in children:
                self.add_run(child)
        else:
            raise ValueError(f"{path}: not a run directory, a study directory (study.json) or a results root")


def load_table(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One tidy table from a results root, a study directory or run directories (any mix).

    ``table.attrs`` carries the inputs' configurations (``configs``: run_dir -> flat config;
    ``studies``: study dir -> study.json) for the report.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sources = Sources()
    for p in paths:
        sources.add(Path(p))
    rows: list[dict] = list(sources.placeholders)
    configs: dict[str, dict] = {}
    for run_dir in sources.run_dirs:
        run, config = local_run(run_dir)
        rows.extend(run)
        configs[str(run_dir)] = config
    table = finish_table(rows, configs)
    table.attrs["studies"] = sources.studies
    return table


def finish_table(rows: list[dict], configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    variants = variant_labels(rows, configs)
    for row in rows:
        row["variant"] = variants.get(str(row.get("run_dir")), "")
    layer_cols = sorted({k for r in rows for k in r if k.startswith("layer_density:")})
    table = pd.DataFrame(rows, columns=COLUMNS + layer_cols)
    for col in ("density", "test_accuracy", "val_accuracy", "cost_epochs", "cost_flops", "wall_seconds", "round", "batches", *layer_cols):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    table["seed"] = pd.to_numeric(table["seed"], errors="coerce").astype("Int64")
    table["discovered"] = table["discovered"].fillna(False).astype(bool)
    for col in ("variant", "timing", "stop_reason", "error", "family", "label", "short_label", "color"):
        table[col] = table[col].fillna("").astype(str)
    table["order"] = pd.to_numeric(table["order"], errors="coerce").astype("Int64")
    table["headline"] = table["headline"].astype(object).where(table["headline"].notna(), None)
    table.attrs["configs"] = {k: dict(v) for k, v in configs.items()}
    return table


def variant_labels(rows: Sequence[Mapping[str, Any]], configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Per run: the settings in which it differs from other runs of its method (seed and
    bookkeeping aside), so different configurations are never averaged as if they were seeds."""
    by_method: dict[str, dict[str, None]] = {}
    for row in rows:
        run_dir = str(row.get("run_dir"))
        if run_dir in configs:
            by_method.setdefault(row.get("method"), {})[run_dir] = None
    out = {}
    for dirs in by_method.values():
        keys = sorted({k for d in dirs for k in configs[d] if not _NOT_VARIANT.match(k) and not _under(k, IDENTITY_EXCLUDED)})
        varying = [k for k in keys if len({json.dumps(configs[d].get(k), sort_keys=True, default=str) for d in dirs}) > 1]
        for d in dirs:
            if varying and all(k.startswith("growth.timing.") for k in varying):
                out[d] = timing_label(configs[d])  # the schedule in words, not its keys
            else:
                out[d] = ", ".join(f"{k}={configs[d].get(k)}" for k in varying)
    return out
