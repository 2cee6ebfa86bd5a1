"""The text table of a study: per method, the densities reached, test accuracy and cost at each
(printed when a study ends and written to its table.md)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from growth.records import read_summary
from growth.study import finished


def study_table(jobs: Sequence[Any], reference_method: str | None = None) -> str:
    """Per method: the densities reached, test accuracy at each, and cost (dense-run units)."""
    by_method: dict[str, list[dict]] = {}
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
                by_method.setdefault(method, []).append(
                    {
                        "density": float(row["density"]),
                        "acc": float(row["test_accuracy"]),
                        "cost": float(row["cost_epochs"]),
                        "discovered": summary.get("discovered_density") is not None
                        and abs(float(row["density"]) - summary["discovered_density"]) < 1e-12,
                    }
                )
    lines = ["| method | points | density range | discovered density | test accuracy there | cost there (dense runs) | best test accuracy (density, cost) |", "|---|---|---|---|---|---|---|"]
    for method, points in by_method.items():
        points.sort(key=lambda p: p["density"])
        disc = next((p for p in points if p["discovered"]), None)
        best = max(points, key=lambda p: p["acc"])
        lines.append(
            f"| {method} | {len(points)} | {100 * points[0]['density']:.2f}% - {100 * points[-1]['density']:.2f}% | "
            + (f"{100 * disc['density']:.2f}% | {100 * disc['acc']:.2f}% | {disc['cost']:.2f} | " if disc else "- | - | - | ")
            + f"{100 * best['acc']:.2f}% ({100 * best['density']:.2f}%, {best['cost']:.2f}) |"
        )
    reference = reference_method or next(iter(by_method), None)
    if reference in by_method and len(by_method[reference]) > 1:
        methods = list(by_method)
        lines += ["", f"Test accuracy (cost in dense runs) at the densities of {reference}; other methods at their"
                  " nearest point within half a growth step (x1.118):", "",
                  "| density | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for ref in by_method[reference]:
            cells = []
            for m in methods:
                near = min(by_method[m], key=lambda p: abs(math.log(p["density"] / ref["density"])))
                close = abs(math.log(near["density"] / ref["density"])) <= math.log(1.118)
                cells.append(f"{100 * near['acc']:.2f}% ({near['cost']:.2f})" if close else "")
            lines.append(f"| {100 * ref['density']:.2f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))
