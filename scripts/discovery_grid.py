"""Calibrate density discovery on records: every registered candidate rule, over a grid of its
settings, with every recorded proxy, replayed (no training) on growth runs that have their full
curve, one results root per task.

    .venv/bin/python scripts/discovery_grid.py --task digits=results_cal/digits --task mnist=results_cal/mnist \
        [--csv grid.csv] [--top 15]

Runs recorded with `growth.proxy.anneal_epochs=1 growth.proxy.ema_halflife=0.1` (and
`anneal_continue=false`, the default) hold three proxies on one growth path: `proxy_accuracy`
(annealed), `unannealed_accuracy` (plain) and `ema_accuracy`. A setting's cost is the growth cost
up to its stop plus one full training, in dense runs; for a proxy read without the anneal the
anneal epochs are taken out of the growth cost (they would not have been trained).

Each row is judged by the discovery targets over every run of every task: within 2 growth steps
of the oracle, at most 0.5 points of validation accuracy short of the plateau, and a spread over
seeds (largest / smallest discovered density) of at most 1.5625 per task. Rows meeting all three
come first; the rest by how far they miss.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.replay import replay, rule_summary  # noqa: E402

GRID = {
    "logistic": {"confirm": [2, 3, 4]},
    "noise_tol": {"noise_factor": [1.0, 2.0, 3.0], "confirm": [2, 3, 4]},
    "recent_plateau": {"width_decades": [0.1, 0.15, 0.2, 0.3]},
    "slope": {"width_decades": [0.2, 0.3], "max_gain_per_decade": [0.01, 0.02, 0.04]},
    "extrapolate": {},
}
PROXIES = ("proxy_accuracy", "unannealed_accuracy", "ema_accuracy")
PROXY_NAMES = {"proxy_accuracy": "annealed", "unannealed_accuracy": "plain", "ema_accuracy": "ema"}
MAX_STEPS, MAX_SHORTFALL, MAX_SPREAD = 2.0, 0.005, 1.5625


@functools.lru_cache(maxsize=None)  # each run's config is read once, not once per grid row
def _growth_share(run_dir: Path, proxy: str) -> float:
    """The fraction of the recorded growth cost a run reading `proxy` would have trained."""
    cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    epochs, anneal = cfg["growth"]["timing"]["epochs"], cfg["growth"].get("proxy", {}).get("anneal_epochs", 0)
    return 1.0 if proxy == "proxy_accuracy" or not anneal else epochs / (epochs + anneal)


def settings_grid(rule: str) -> list[dict[str, str]]:
    keys = list(GRID[rule])
    return [dict(zip(keys, map(str, values))) for values in itertools.product(*(GRID[rule][k] for k in keys))] or [{}]


def evaluate(tasks: dict[str, Path], proxy: str, rule: str, sets: dict[str, str]) -> dict:
    per_task, costs = [], []
    for task, root in tasks.items():
        table = replay([root], [rule], sets, proxy=proxy)
        for row in table.itertuples(index=False):
            share = _growth_share(Path(row.run_dir), proxy)
            costs.append((row.cost_dense_runs - 1.0) * share + 1.0)
        (summary,) = rule_summary(table).to_dict("records")
        per_task.append((task, table, summary))
    errors = [abs(e) for _, t, _ in per_task for e in t["error_steps"] if not math.isnan(e)]
    shortfalls = [s for _, t, _ in per_task for s in t["val_shortfall"] if not math.isnan(s)]
    spreads = [s["spread"] for _, _, s in per_task]
    worst_error, worst_short, worst_spread = max(errors), max(shortfalls), max(spreads)
    miss = (max(0.0, worst_error - MAX_STEPS) + max(0.0, worst_short - MAX_SHORTFALL) / 0.0025
            + max(0.0, math.log(worst_spread / MAX_SPREAD) / math.log(1.25)))
    row = {"proxy": PROXY_NAMES[proxy], "rule": rule, "settings": " ".join(f"{k}={v}" for k, v in sets.items()) or "-",
           "meets": miss == 0, "miss": miss, "worst_error": worst_error, "worst_shortfall_points": 100 * worst_short,
           "worst_spread": worst_spread, "cost": sum(costs) / len(costs),
           "fired": sum(s["fired"] for _, _, s in per_task), "runs": sum(s["runs"] for _, _, s in per_task)}
    for task, _, s in per_task:
        row[f"{task}: discovered (%)"] = s["discovered"]
        row[f"{task}: error (steps)"] = s["errors"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", action="append", required=True, metavar="NAME=ROOT", help="a task and its results root")
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    tasks = dict(t.split("=", 1) for t in args.task)
    rows = [evaluate(tasks, proxy, rule, sets) for proxy in PROXIES for rule in GRID for sets in settings_grid(rule)]
    table = pd.DataFrame(rows).sort_values(["miss", "cost"], kind="stable")
    if args.csv:
        table.to_csv(args.csv, index=False)
    shown = table.head(args.top).copy()
    for col in ("miss", "worst_error", "worst_shortfall_points", "worst_spread", "cost"):
        shown[col] = shown[col].map(lambda x: f"{x:.2f}")
    cells = [list(shown.columns)] + [[str(v) for v in r] for r in shown.itertuples(index=False)]
    print("\n".join("| " + " | ".join(map(str, r)) + " |" for r in cells[:1] + [["---"] * len(cells[0])] + cells[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
