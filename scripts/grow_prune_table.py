"""Grow-prune against IMP-C at the same densities: for every pruning level of each grow_prune run,
IMP-C's test accuracy and cumulative cost at that density (same seed; linear in log10 density
between IMP-C's two levels around it), the accuracy gap and the cost ratio.

    .venv/bin/python scripts/grow_prune_table.py RESULTS_ROOT [--below 0.05] [--above 0.02]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path


def curve(run_dir: Path) -> list[dict]:
    with open(run_dir / "curve.csv", newline="") as f:
        rows = [{k: float(r[k]) for k in ("density", "test_accuracy", "cost_epochs")} | {"point": r["point"]} for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: r["density"])


def at_density(rows: list[dict], d: float, key: str) -> float:
    x = math.log10(d)
    for lo, hi in zip(rows, rows[1:]):
        a, b = math.log10(lo["density"]), math.log10(hi["density"])
        if a <= x <= b:
            t = 0.0 if b == a else (x - a) / (b - a)
            return lo[key] + t * (hi[key] - lo[key])
    return math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--below", type=float, default=0.05, help="levels at or below this density")
    parser.add_argument("--above", type=float, default=0.02, help="levels at or above this density")
    args = parser.parse_args(argv)
    runs = {}
    for summary_path in sorted(args.root.glob("*/summary.json")):
        s = json.loads(summary_path.read_text())
        if s.get("status") == "finished" and s.get("method") in ("grow_prune", "imp_c"):
            runs[(s["method"], s["seed"])] = summary_path.parent
    print("| seed | density (%) | grow-prune test (%) | IMP-C test (%) | gap (points) | grow-prune cost | IMP-C cost | cost ratio |")
    print("|---|---|---|---|---|---|---|---|")
    gaps, ratios = [], []
    for (method, seed), run_dir in sorted(runs.items()):
        if method != "grow_prune" or ("imp_c", seed) not in runs:
            continue
        imp = curve(runs[("imp_c", seed)])
        for p in curve(run_dir):
            if not p["point"].startswith("level:") or not args.above - 1e-9 <= p["density"] <= args.below + 1e-9:
                continue
            acc, cost = at_density(imp, p["density"], "test_accuracy"), at_density(imp, p["density"], "cost_epochs")
            gap, ratio = 100 * (acc - p["test_accuracy"]), p["cost_epochs"] / cost
            gaps.append(gap)
            ratios.append(ratio)
            print(f"| {seed} | {100 * p['density']:.2f} | {100 * p['test_accuracy']:.2f} | {100 * acc:.2f} | {gap:+.2f} | "
                  f"{p['cost_epochs']:.2f} | {cost:.2f} | {ratio:.2f} |")
    if gaps:
        print(f"\n{len(gaps)} levels: gap {min(gaps):+.2f} to {max(gaps):+.2f} points (mean {sum(gaps) / len(gaps):+.2f}); "
              f"cost ratio {min(ratios):.2f} to {max(ratios):.2f} (mean {sum(ratios) / len(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
