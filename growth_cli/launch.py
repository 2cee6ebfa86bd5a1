"""The launcher: `growth-launch [overrides]` (`python launch.py` in a checkout) runs one job;
`-m` runs a Hydra multirun sweep. Configs are this package's data (growth_cli/conf).

With no arguments it runs the embedded default: PWMPR on scikit-learn's digits with a small MLP.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from growth.config.store import register_configs
from growth.errors import ConfigError, safe_text

register_configs()
log = logging.getLogger("growth")
CONF_DIR = Path(__file__).resolve().parent / "conf"
REFUSED: list[ConfigError] = []
STARTED: list[bool] = []  # set once Hydra has called main (so its own set-up succeeded)


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
def main(cfg: DictConfig) -> dict | float | list[float] | str:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from growth.run import run

    STARTED.append(True)
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
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            if cfg.sweep.objective is not None:  # one trial's values refused: that trial fails alone
                log.error("trial refused: %s", exc)
                return sweep_objective(cfg, {"status": "refused", "error": str(exc)})
            raise
        REFUSED.append(exc)  # said by cli() once Hydra has returned (raising it here, Hydra logs it first)
        return {"status": "refused"}
    except Exception as exc:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # In a sweep one failed run must not hide the others: its summary.json says "failed",
        # and the sweep report lists it.
        log.exception("run failed")
        return sweep_objective(cfg, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
    from growth.distributed import is_writer

    if is_writer():  # one summary for a run trained by several processes
        print(format_summary(summary), flush=True)
    return sweep_objective(cfg, summary)


def sweep_objective(cfg: DictConfig, summary: dict) -> dict | float | list[float] | str:
    """What main returns: the summary, or with sweep.objective set the number (or numbers) a
    sweeper optimises, read from the run's records (a skipped finished run gives its recorded value).

    A trial without a value (refused, failed, diverged, nothing trained at the discovered density)
    returns a sentence saying why: the Optuna sweeper cannot read it as a number, so it records
    the trial as failed and goes on. NaN would not do: Optuna 2.10 refuses it when told, and the
    sweeper's retry as a failed trial (still with the value) then ends the whole sweep."""
    import math

    objective = cfg.sweep.objective
    if objective is None:
        return summary
    if summary.get("status") != "finished":
        return f"no objective: run {summary.get('status')}: {summary.get('error', '')} ({summary.get('run_dir')})"
    accuracy = summary.get("val_accuracy")
    cost = (summary.get("cost") or {}).get("epochs")
    if accuracy is None or cost is None or not (math.isfinite(accuracy) and math.isfinite(cost)):
        return f"no objective: no validation accuracy and cost recorded at the discovered density ({summary.get('run_dir')})"
    if objective == "val_and_cost":
        return [float(accuracy), float(cost)]
    if objective == "val_minus_cost":
        return float(accuracy) - cfg.sweep.cost_penalty * float(cost)
    return float(accuracy)


def run_study(cfg: DictConfig) -> list:
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from growth.config.validation import validate
    from growth.study import StudyPlan, execute

    validate(cfg)
    plan = StudyPlan(cfg, lambda overrides: compose(config_name="config", overrides=overrides), HydraConfig.get().overrides.task)
    jobs = execute(plan)
    if cfg.dry_run or (cfg.study.executor == "slurm" and not cfg.study.wait):
        return jobs
    summarise_study(plan)
    return jobs


def summarise_study(plan) -> None:
    """The study's table and its figures, tables and report, from analysis (records only)."""
    from analysis import write_report
    from analysis.study_table import study_table
    from growth.records import atomic_write_text

    table = study_table(plan.jobs, plan.st.reference)
    atomic_write_text(plan.dir / "table.md", table + "\n")
    print(f"study {plan.st.name}: {len(plan.jobs)} runs, records in {plan.dir}")
    print(table, flush=True)
    try:
        written = write_report(plan.dir, plan.dir / "analysis")
        log.info("study %s: analysis written to %s (%d files)", plan.st.name, plan.dir / "analysis", len(written))
    except Exception as exc:  # the records stand; a plotting problem never fails a study
        log.warning("study %s: analysis report not written: %s", plan.st.name, exc)


def compose_for_hints(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def sbatch_refusal(exc: BaseException) -> str | None:
    """sbatch's refusal of a submission (submitit raises it with sbatch's stderr), said as one
    line naming the settings that ask for resources; None for any other error."""
    try:
        from submitit.core.utils import FailedJobError
    except ImportError:
        return None
    if not isinstance(exc, FailedJobError) or "sbatch" not in str(exc):
        return None
    said = " ".join(line.strip() for line in str(exc).splitlines() if "error" in line.lower()) or str(exc).strip()
    hint = ""
    if "gres" in said.lower():
        hint = (" (GPUs asked for where the partition has none: set GROWTH_SLURM_GPUS=0, or study.slurm.gpus_per_task=0 "
                "for a study, hydra.launcher.gpus_per_task=0 for a sweep; or choose a partition with GPUs)")
    return (f"SLURM refused the submission: {said}{hint}; the resources asked for are study.slurm.* for a study and "
            "hydra.launcher.* for a sweep (partition, account, qos, constraint, gpus_per_task, cpus_per_task, mem_gb, "
            "time_min; GROWTH_SLURM_* set them per account). Jobs submitted before the refusal are listed by squeue.")


def cli(argv: list[str] | None = None) -> int:
    """Run Hydra's main and turn every user error into one message and exit code 2: errors are
    raised by the library (and by Hydra, told to raise rather than print a traceback)."""
    import os

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from growth.errors import DryRunDone, LaunchRefused

    args = sys.argv[1:] if argv is None else list(argv)
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    STARTED.clear()
    try:
        sys.argv = [sys.argv[0], *args]
        main()
        if REFUSED:
            raise REFUSED.pop()
    except (ConfigError, LaunchRefused) as exc:
        print(f"error: {safe_text(str(exc))}", file=sys.stderr)
        return 2
    except DryRunDone:
        return 0
    except (HydraException, OmegaConfBaseException) as exc:
        # Hydra refused the command line: its message, then the key meant and the valid keys.
        from growth.config.hints import override_hints

        message = safe_text(str(exc) + (f"\n{exc.__cause__}" if isinstance(exc.__cause__, OmegaConfBaseException) else ""))
        print(message, file=sys.stderr)
        hints = override_hints(args, compose_for_hints)
        if hints:
            print("error: " + "\n       ".join(hints), file=sys.stderr)
        return 2
    except Exception as exc:
        refusal = sbatch_refusal(exc)
        if refusal is None:
            if not isinstance(exc, OSError) or STARTED:
                raise  # (an OSError after Hydra's set-up is the run's own I/O failure: its records say so)
            # Hydra makes its output directory under output.root before any of the framework's checks.
            given = next((a for a in args if a.startswith(("output.root=", "++output.root=", "+output.root="))), "output.root")
            print(f"error: {given.lstrip('+')}: Hydra cannot create its output directory {exc.filename} "
                  f"({exc.strerror or exc}): choose a writable output.root (or set GROWTH_RESULTS)", file=sys.stderr)
            return 2
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
    return 0


if __name__ == "__main__":
    sys.exit(cli())
