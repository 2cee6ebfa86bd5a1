"""Throughput of packed runs (study.pack=k): N small runs, k at a time as processes sharing one
device, against the same N runs one at a time, on one machine (docs/slurm.md, docs/benchmarks.md).

    python bench/packing.py --device cuda --k 1,2,4,8 --runs 8 dataset=mnist model=lenet300 --out bench/results/packing
    .venv/bin/python bench/packing.py --device cpu --k 1,2 --runs 4 --fast --out /tmp/packing   # checks the script

Each batch of k runs goes through growth.study.pack.run_members, exactly what a packed SLURM job
runs (one spawned process per run, the CPUs split among them as trainer.cpu_threads), without
the queue: the figure is the device's throughput, not SLURM's scheduling. k=1 is one run per job.
Every k starts from an empty results root, so no run is skipped. Trailing arguments are config
overrides for every run (default: the embedded default, PWMPR on digits; seeds 0..N-1).
Writes packing.md and packing.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Tiny runs (the tests' settings): seconds each, so the fixed cost of a process shows.
FAST = ["trainer.epochs=6", "growth.timing.epochs=1", "growth.max_rounds=5", "growth.stop.rule=none",
        "growth.proxy.anneal_epochs=0", "model.hidden=[32,32]"]


def compose_runs(overrides: list[str], runs: int, root: Path):
    from hydra import compose, initialize_config_dir

    from growth.config.store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return [compose(config_name="config", overrides=[*overrides, f"seed={s}", f"output.root={root}", "output.progress=false"])
                for s in range(runs)]


def machine(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="trainer.device of every run (cuda, cpu)")
    parser.add_argument("--k", default="1,2,4", help="runs per job to compare, comma-separated; 1 is one run per job")
    parser.add_argument("--runs", type=int, default=4, help="runs in all (the same N for every k)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="the job's cpus_per_task, split among the members")
    parser.add_argument("--fast", action="store_true", help="the tests' tiny settings (a run takes seconds)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "packing")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run")
    args = parser.parse_args(argv)

    from growth.study.pack import run_members

    ks = [int(k) for k in args.k.split(",")]
    overrides = [*(FAST if args.fast else []), f"trainer.device={args.device}", *args.overrides]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in ks:
        root = args.out / "runs" / f"k{k}-{int(time.time())}"
        configs = compose_runs(overrides, args.runs, root)
        load_before = load()
        started = time.perf_counter()
        statuses = []
        for i in range(0, len(configs), k):
            batch = configs[i:i + k]
            statuses += [r["status"] for r in run_members(batch, [f"s{int(c.seed)}" for c in batch], args.cpus)]
        seconds = time.perf_counter() - started
        rows.append({"k": k, "runs": args.runs, "seconds": seconds, "runs_per_hour": 3600 * args.runs / seconds,
                     "statuses": statuses, "load_before": load_before, "load_after": load()})
        print(f"k={k}: {args.runs} runs in {seconds:.1f} s ({rows[-1]['runs_per_hour']:.0f} runs/h), {statuses}", flush=True)
    base = next((r for r in rows if r["k"] == 1), rows[0])
    for r in rows:
        r["throughput_vs_k1"] = base["seconds"] / r["seconds"]
    info = machine(args.device)
    lines = [f"Packed runs on {info.get('gpu', info['cpu'])} ({info['cpus']} CPUs, torch {info['torch']}), "
             f"{args.runs} runs, overrides: `{' '.join(overrides)}`", "",
             "| runs per job (k) | wall time (s) | runs per hour | throughput / k=1 | all finished | load avg before -> after |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ok = all(s == "finished" for s in r["statuses"])
        lines.append(f"| {r['k']} | {r['seconds']:.1f} | {r['runs_per_hour']:.0f} | {r['throughput_vs_k1']:.2f} | {ok} | "
                     f"{r['load_before']} -> {r['load_after']} |")
    (args.out / "packing.md").write_text("\n".join(lines) + "\n")
    (args.out / "packing.json").write_text(json.dumps({"machine": info, "overrides": overrides, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))
    return 0 if all(s == "finished" for r in rows for s in r["statuses"]) else 1


if __name__ == "__main__":
    sys.exit(main())
