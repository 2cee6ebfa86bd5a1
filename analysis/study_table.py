"""The text table of a study: per method (and seed, when the study has several), the densities
reached, test accuracy and cost at each (printed when a study ends and written to its table.md).
Seeds are kept apart here; their statistics are the analysis report's (analysis.tables)."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from growth.records import read_summary
from growth.study import finished


def _seed(label: str, summary: dict) -> int | None:
    """The run's seed: its summary's, else the job label's ``/s<seed>`` part."""
    if summary.get("seed") is not None:
        return int(summary["seed"])
    found = re.search(r"/s(\d+)(/|$)", label)
    return int(found.group(1)) if found else None


def study_table(jobs: Sequence[Any], reference_method: str | None = None) -> str:
    """Per method and seed: the densities reached, test accuracy at each, and cost (dense-run
    units); the other methods at the reference method's densities, seed by seed."""
    by_run: dict[tuple[str, int | None], list[dict]] = {}
    notes = []
    for job in jobs:
        job = job if isinstance(job, SimpleNamespace) else SimpleNamespace(**(job if isinstance(job, dict) else vars(job)))
        method = job.label.split("/")[0]
        if not finished(job):
            notes.append(f"{job.label}: {job.status}" + (f" ({job.error})" if job.error else ""))
            continue
        summary = read_summary(job.run_dir) or {}
        if summary.get("not_applicable"):
            continue
        with open(Path(job.run_dir) / "curve.csv", newline="") as f:
            for row in csv.DictReader(f):
                by_run.setdefault((method, _seed(job.label, summary)), []).append(
                    {
                        "density": float(row["density"]),
                        "acc": float(row["test_accuracy"]),
                        "cost": float(row["cost_epochs"]),
                        "discovered": summary.get("discovered_density") is not None
                        and abs(float(row["density"]) - summary["discovered_density"]) < 1e-12,
                    }
                )
    methods = list(dict.fromkeys(m for m, _ in by_run))
    seeds = sorted({s for _, s in by_run if s is not None}) + ([None] if any(s is None for _, s in by_run) else [])
    several = len(seeds) > 1

    def name(method: str, seed: int | None) -> str:
        return f"{method} (seed {seed})" if several else method

    lines = ["| method | points | density range | discovered density | test accuracy there | cost there (dense runs) | best test accuracy (density, cost) |", "|---|---|---|---|---|---|---|"]
    for method, seed in sorted(by_run, key=lambda k: (methods.index(k[0]), seeds.index(k[1]))):
        points = sorted(by_run[(method, seed)], key=lambda p: p["density"])
        by_run[(method, seed)] = points
        disc = next((p for p in points if p["discovered"]), None)
        best = max(points, key=lambda p: p["acc"])
        lines.append(
            f"| {name(method, seed)} | {len(points)} | {100 * points[0]['density']:.2f}% - {100 * points[-1]['density']:.2f}% | "
            + (f"{100 * disc['density']:.2f}% | {100 * disc['acc']:.2f}% | {disc['cost']:.2f} | " if disc else "- | - | - | ")
            + f"{100 * best['acc']:.2f}% ({100 * best['density']:.2f}%, {best['cost']:.2f}) |"
        )
    reference = reference_method or next(iter(methods), None)
    for seed in seeds:
        # seed by seed: a method's point is compared with the reference's of the same seed only
        if len(by_run.get((reference, seed), [])) <= 1:
            continue
        here = [m for m in methods if (m, seed) in by_run]
        lines += ["", f"Test accuracy (cost in dense runs) at the densities of {reference}"
                  + (f", seed {seed}" if several else "") + "; other methods at their"
                  " nearest point within half a growth step (x1.118):", "",
                  "| density | " + " | ".join(here) + " |", "|---|" + "---|" * len(here)]
        for ref in by_run[(reference, seed)]:
            cells = []
            for m in here:
                near = min(by_run[(m, seed)], key=lambda p: abs(math.log(p["density"] / ref["density"])))
                close = abs(math.log(near["density"] / ref["density"])) <= math.log(1.118)
                cells.append(f"{100 * near['acc']:.2f}% ({near['cost']:.2f})" if close else "")
            lines.append(f"| {100 * ref['density']:.2f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))
