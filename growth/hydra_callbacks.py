"""Hydra callbacks for multirun sweeps: validate every job before anything is launched, print
the jobs for a dry run, and report how each run ended. Refusals are raised (LaunchRefused);
launch.py turns them into a message and an exit code (growth.errors says why they are
BaseExceptions)."""

from __future__ import annotations

import itertools
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def sweep_job_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job of the sweep: the cartesian product of the sweep overrides,
    in the order Hydra's basic sweeper launches them (public override parser API)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from growth.errors import ConfigError

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    choices: dict[str, list[str]] = {}  # a key given twice keeps its last value, as in Hydra
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ConfigError(f"{override.input_line}: only lists of values can be swept (a,b,c), not ranges or intervals")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def check_search_space(config: DictConfig, base: list[str]) -> None:
    """Every key of a sweeper's search space (`hydra.sweeper.params`) composes with the sweep's
    first job at one of its values, before any trial runs: a misspelt key or a value of the wrong
    type is one line here, not a failure of every trial. (Values out of range are left to the
    trials, which fail alone.)"""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from growth.errors import ConfigError

    params = config.hydra.sweeper.get("params") or {}
    for key, spec in params.items():
        try:
            (override,) = OverridesParser.create().parse_overrides([f"{key}={spec}"])
            if override.is_discrete_sweep():
                value = next(iter(override.sweep_string_iterator()))
            elif override.is_sweep_override():  # interval(a, b) or range: its lower end
                value = str(override.value().start)
            else:
                value = override.get_value_element_as_str()
            compose_job([*base, f"{key}={value}"])
        except (HydraException, OmegaConfBaseException) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            cause = exc.__cause__
            if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
                reason = str(cause).strip().splitlines()[0]
            raise ConfigError(f"hydra.sweeper.params: {key}: {spec}: {reason}") from None


def launched_jobs(config: DictConfig) -> list[list[str]]:
    """The override list of every job the sweep launched. A sweeper with a search space (Optuna:
    `hydra.sweeper.params`) chooses its trials as it goes: each trial's `.hydra/overrides.yaml`
    in its job folder says what it ran. Otherwise the cartesian product of the command line."""
    from pathlib import Path

    if config.hydra.sweeper.get("params"):
        found = [(int(p.parent.parent.name), p) for p in Path(config.hydra.sweep.dir).glob("*/.hydra/overrides.yaml")
                 if p.parent.parent.name.isdigit()]
        return [[str(o) for o in OmegaConf.load(p)] for _, p in sorted(found)]
    return sweep_job_overrides(config)


def packed_launcher(config: DictConfig, job_configs: list[DictConfig]) -> int:
    """hydra/launcher=slurm_packed's `pack` (1 for any other launcher), checked: a whole number of
    jobs from 1 to 256, and not with a data-parallel run, whose processes would share one's share."""
    from growth.errors import ConfigError

    if "pack" not in config.hydra.launcher:
        return 1
    pack = config.hydra.launcher.pack
    if isinstance(pack, bool) or not isinstance(pack, int) or not 1 <= pack <= 256:
        raise ConfigError(f"hydra.launcher.pack={pack!r} is invalid: sweep jobs a SLURM job runs at once, from 1 to 256")
    for cfg in job_configs:
        if pack > 1 and cfg.trainer.devices * cfg.trainer.nodes > 1:
            raise ConfigError(f"hydra.launcher.pack={pack} shares one job's resources among several runs, but trainer.devices="
                              f"{cfg.trainer.devices} x trainer.nodes={cfg.trainer.nodes} is a data-parallel run: use hydra/launcher=slurm")
    return int(pack)


def compose_job(overrides: list[str]) -> DictConfig:
    from hydra import compose

    return compose(config_name="config", overrides=overrides)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from growth.errors import ConfigError, DryRunDone, LaunchRefused
        from growth.records import run_dir_for
        from growth.run import prepare

        try:
            jobs = sweep_job_overrides(config)
        except ConfigError as exc:
            raise LaunchRefused(f"the sweep was not launched: {exc}") from None
        problems = []
        planned = []
        configs = []
        for overrides in jobs:
            try:
                cfg = compose_job(overrides)
                prepare(cfg, before_submission=True)
                planned.append((overrides, str(run_dir_for(cfg))))
                configs.append(cfg)
            except ConfigError as exc:
                problems.append(f"job {' '.join(overrides)}: {exc}")
        if problems:
            raise LaunchRefused("the sweep was not launched:\n" + "\n".join(problems))
        try:
            check_search_space(config, jobs[0] if jobs else [])
            pack = packed_launcher(config, configs)
        except ConfigError as exc:
            raise LaunchRefused(f"the sweep was not launched: {exc}") from None
        if config.get("dry_run"):
            launcher = OmegaConf.to_container(config.hydra.launcher, resolve=True)
            resources = {k: v for k, v in launcher.items() if k not in ("_target_", "setup", "pack") and v not in (None, {}, [])}
            packed = f" in {-(-len(planned) // pack)} SLURM jobs of up to {pack} (each one job's resources, shared)" if pack > 1 else ""
            print(f"dry run: {len(planned)} jobs would be launched{packed} with {resources}")
            for overrides, run_dir in planned:
                print(f"  {' '.join(overrides) or '(defaults)'}  ->  {run_dir}")
            raise DryRunDone()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from growth.records import read_summary, run_dir_for

        lines = []
        counts: dict[str, int] = {}
        for overrides in launched_jobs(config):
            run_dir = run_dir_for(compose_job(overrides))
            summary = read_summary(run_dir) or {}
            status = summary.get("status", "missing")
            counts[status] = counts.get(status, 0) + 1
            detail = f"  ({summary.get('error')})" if summary.get("error") else ""
            lines.append(f"  {status:9s} {' '.join(overrides)}  ->  {run_dir}{detail}")
        print("sweep report: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        print("\n".join(lines), flush=True)
