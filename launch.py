"""Entry point: `python launch.py [overrides]` runs one job; `-m` runs a Hydra multirun sweep.

With no arguments it runs the embedded default: PWMPR on scikit-learn's digits with a small MLP.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from growth.config import register_configs
from growth.errors import ConfigError

register_configs()
log = logging.getLogger("growth")


def format_summary(summary: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    if summary.get("status") != "finished":
        return f"run {summary.get('status')}: {summary.get('error', '')}\n  run directory: {summary.get('run_dir')}"
    cost = summary.get("cost") or {}
    lines = [
        f"{summary['method']} on {summary['dataset']}/{summary['model']} (seed {summary['seed']})"
        + ("  [already finished: skipped]" if summary.get("skipped") else "")
    ]
    if summary.get("discovered_density") is not None:
        lines += [
            f"  seed density        {pct(summary.get('seed_density'))}",
            f"  discovered density  {pct(summary.get('discovered_density'))}  after {summary.get('rounds')} rounds ({summary.get('stop_reason')})",
            f"  proxy accuracy      {pct(summary.get('proxy_accuracy'))}  (validation, after the round)",
            f"  test accuracy       {pct(summary.get('test_accuracy'))}  (after extensive training)",
        ]
    else:
        lines += [
            f"  density             {pct(summary.get('density'))}" + (f"  (after {summary['levels']} levels)" if summary.get("levels") else ""),
            f"  test accuracy       {pct(summary.get('test_accuracy'))}",
        ]
    budget = summary.get("budget") or {}
    if budget.get("match"):
        lines.append(f"  budget              {budget['used_epochs']} epochs, matched to {budget['match']} ({budget['given_epochs']:.2f} given)")
    if cost.get("epochs") is not None:
        lines.append(f"  cost                {cost['epochs']:.2f} dense runs, {cost['flops']:.3g} FLOPs, {cost['seconds']:.1f} s")
    lines.append(f"  run directory       {summary.get('run_dir')}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    from growth.run import run

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        if cfg.study.name is not None:
            return run_study(cfg)
        if cfg.dry_run:
            from growth.records import run_dir_for
            from growth.run import prepare

            prepare(cfg)
            print(f"dry run: would run {cfg.method.name} in {run_dir_for(cfg)}")
            return {"status": "dry run"}
        summary = run(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # In a sweep one failed run must not hide the others: its summary.json says "failed",
        # and the sweep report lists it.
        log.exception("run failed")
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    from growth.distributed import is_writer

    if is_writer():  # one summary for a run trained by several processes
        print(format_summary(summary), flush=True)
    return summary


def run_study(cfg: DictConfig) -> list:
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from growth.config import validate
    from growth.study import Study, study_table

    validate(cfg)
    study = Study(cfg, lambda overrides: compose(config_name="config", overrides=overrides), HydraConfig.get().overrides.task)
    jobs = study.run()
    if cfg.dry_run or (cfg.study.executor == "slurm" and not cfg.study.wait):
        return jobs
    print(f"study {cfg.study.name}: {len(jobs)} runs, records in {study.dir}")
    print(study_table(jobs, cfg.study.reference), flush=True)
    return jobs


def compose_for_hints(overrides: list[str]):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:
        # Hydra refused the command line (exit 1 after its own message): name the valid keys.
        if exc.code == 1:
            from growth.config import override_hints

            hints = override_hints(sys.argv[1:], compose_for_hints)
            if hints:
                print("error: " + "\n       ".join(hints), file=sys.stderr)
                sys.exit(2)
        raise
