"""Studies: the set of runs behind a comparison figure, as a plan of jobs in dependency order.

Stage 1 runs everything independent (dense, the growth methods, IMP-C); stage 2 is planned from
stage 1's results: the fixed-density methods at the reference run's snapshot densities, each
with its budget matched to the reference. Every run is an ordinary run directory, so a study
that is interrupted and relaunched skips what finished and resumes what did not.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from growth import records
from growth.errors import ConfigError
from growth.selection import nearest_rounds

log = logging.getLogger("growth")

# Settings the study controls itself; the user's other overrides reach every run.
STUDY_KEYS = ("study", "method", "seed", "budget", "extensive.which", "growth.stop.keep_growing", "growth.max_density")
# How and where a study is executed, not what it computes: a relaunch that changes these (another
# partition, GROWTH_SLURM_* set, local instead of SLURM) finds the same study directory.
STUDY_EXECUTION_KEYS = ("executor", "workers", "pack", "wait", "poll_seconds", "slurm")


def study_identity(st: DictConfig, base_overrides: Sequence[str]) -> str:
    """A hash of what the study computes: its own settings less execution, and the overrides
    that change its runs (those a run's identity ignores, such as output or logger, left out)."""
    # A setting at null and a method without overrides are left out, so that an optional key or a
    # method added later renames no existing study.
    settings = {k: v for k, v in OmegaConf.to_container(st, resolve=True).items() if k not in STUDY_EXECUTION_KEYS and v is not None}
    settings["method_overrides"] = {m: o for m, o in settings.get("method_overrides", {}).items() if o}
    overrides = sorted(o for o in base_overrides if not _under(override_key(o), records.IDENTITY_EXCLUDED))
    ident = json.dumps({"study": settings, "overrides": overrides}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:10]


@dataclass
class Job:
    """One run of a study: the overrides that make its config, and where it stands."""

    label: str
    overrides: list[str]
    stage: int
    depends_on: list[str] = field(default_factory=list)
    run_dir: str | None = None
    job_id: str | None = None
    status: str = "planned"
    error: str | None = None
    seconds: float | None = None


def override_key(override: str) -> str:
    """The key (or config group) an override sets: `+a.b=1` -> `a.b`, `hydra/launcher=slurm` -> `hydra/launcher`."""
    return override.lstrip("+~").split("=", 1)[0]


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in prefixes)


def user_overrides(task_overrides: Sequence[str]) -> list[str]:
    """The command line's overrides minus the keys the study sets per run."""
    return [o for o in task_overrides if not _under(override_key(o), STUDY_KEYS)]


def plan_independent(st) -> list[Job]:
    jobs = []
    for seed in st.seeds:
        for m in st.baselines:
            jobs.append(Job(f"{m}/s{seed}", [f"method={m}", f"seed={seed}"], 1))
        extensive = ["extensive.which=all"] if st.densities is None else [
            "extensive.which=listed", f"extensive.densities=[{','.join(str(d) for d in st.densities)}]"]
        for m in st.growth_methods:
            jobs.append(
                Job(
                    f"{m}/s{seed}",
                    [f"method={m}", f"seed={seed}", *extensive, "growth.stop.keep_growing=true", f"growth.max_density={st.max_density}"],
                    1,
                )
            )
    return jobs


def plan_matched(st, seed: int, reference_dir: Path, rounds: list[int], depends_on: list[str]) -> list[Job]:
    """Fixed-density runs at the densities of the reference's given rounds, each with its budget
    matched to the reference at that density (budget.snapshot names the round)."""
    jobs = []
    for m in st.matched_methods:
        for k in rounds:
            jobs.append(
                Job(
                    f"{m}/s{seed}/r{k:03d}",
                    [f"method={m}", f"seed={seed}", f"budget.match={st.reference}", f"budget.reference={reference_dir}", f"budget.snapshot={k}"],
                    2,
                    depends_on=list(depends_on),
                )
            )
    return jobs


def finished_round_densities(run_dir: Path) -> list[float]:
    with open(Path(run_dir) / "rounds.csv", newline="") as f:
        return [float(row["density"]) for row in csv.DictReader(f)]


def predicted_round_densities(cfg: DictConfig) -> list[float]:
    """The densities of the rounds a growth run of this config can have at most (an upper bound:
    growth densities are geometric, capped by max_density and max_rounds)."""
    g = cfg.growth
    d, out = g.seed_density, [g.seed_density]
    while d < g.max_density and len(out) < g.max_rounds:
        d = min(d * g.growth_ratio, g.max_density)
        out.append(d)
    return out + [d]  # one spare round: edge counts round, a run may take one step more


def predicted_rounds(cfg: DictConfig) -> int:
    return len(predicted_round_densities(cfg))


def matched_rounds(st, round_densities: list[float]) -> list[int]:
    """Every round, or with study.densities the rounds nearest those densities."""
    if st.densities is None:
        return list(range(len(round_densities)))
    return nearest_rounds(round_densities, list(st.densities))


class StudyPlan:
    """What a study computes: its directory, the config of each job, and its jobs in stages.

    Pure planning: nothing here runs or submits anything. An executor (growth.study.local,
    growth.study.slurm) takes the plan and runs its jobs in dependency order; stage 2 (the matched
    runs) is planned from the reference's finished rounds when they are known, else from the most
    rounds the reference can have (a round it never reached makes that run a no-op that says so).
    """

    def __init__(self, cfg: DictConfig, compose: Callable[[list[str]], DictConfig], base_overrides: Sequence[str]):
        self.cfg = cfg
        self.st = cfg.study
        self.compose = compose
        self.base = user_overrides(base_overrides)
        self.dir = Path(cfg.output.root) / "studies" / f"{self.st.name}-{study_identity(self.st, self.base)}"
        self.jobs: list[Job] = []

    def job_config(self, job: Job) -> DictConfig:
        method = job.label.split("/")[0]
        extra = list(self.st.method_overrides.get(method, []))
        cfg = self.compose([*self.base, *job.overrides, *extra])
        cfg.output.progress = False if self.local_processes() > 1 else cfg.output.progress
        if cfg.logger.name == "wandb" and cfg.logger.group is None:
            cfg.logger.group = self.dir.name  # the study is one group on the dashboard
        return cfg

    def local_processes(self) -> int:
        """Runs at once in processes of this machine: study.workers, or with the local executor
        study.pack, which means the same there."""
        return max(int(self.st.workers), int(self.st.pack) if self.st.executor == "local" else 1)

    def check(self, runs_in_this_process: bool) -> None:
        """Compose and validate every stage-1 config before anything runs or is submitted."""
        from growth.run import prepare

        for job in plan_independent(self.st):
            cfg = self.job_config(job)
            prepare(cfg, before_submission=True)
            if runs_in_this_process and cfg.trainer.devices * cfg.trainer.nodes > 1:
                raise ConfigError(
                    f"study.executor={self.st.executor} runs every job in this process, but trainer.devices={cfg.trainer.devices} "
                    f"x trainer.nodes={cfg.trainer.nodes} asks for several: use study.executor=slurm"
                )
            if self.st.pack > 1 and cfg.trainer.devices * cfg.trainer.nodes > 1:
                raise ConfigError(
                    f"study.pack={self.st.pack} shares one run's resources among several runs, but trainer.devices="
                    f"{cfg.trainer.devices} x trainer.nodes={cfg.trainer.nodes} is a data-parallel run: use study.pack=1"
                )

    def stage1(self) -> list[Job]:
        return plan_independent(self.st)

    def reference_job(self, seed: int) -> Job | None:
        return next((j for j in self.jobs if j.label == f"{self.st.reference}/s{seed}"), None)

    def stage2(self, seed: int) -> list[Job]:
        """The matched runs of one seed: at the reference's finished rounds, or, while it has not
        finished, at the most rounds it can have, each then depending on the reference's job."""
        ref = self.reference_job(seed)
        if ref is None:
            return []
        ref_cfg = self.job_config(ref)
        ref_dir = records.run_dir_for(ref_cfg)
        summary = records.read_summary(ref_dir)
        done = bool(summary) and summary.get("status") == "finished"
        densities = finished_round_densities(ref_dir) if done else predicted_round_densities(ref_cfg)
        return plan_matched(self.st, seed, ref_dir, matched_rounds(self.st, densities), [] if done else [ref.label])

    def write(self, seconds: float | None) -> None:
        data = {
            "study": OmegaConf.to_container(self.st, resolve=True),
            "overrides": list(self.base),
            "seconds": seconds,
            "jobs": [vars(j) for j in self.jobs],
        }
        records.atomic_write_json(self.dir / "study.json", data)


def finished(job: Job) -> bool:
    if job.run_dir is None:
        return False
    if job.status == "finished" or job.status.startswith("skipped"):
        return True
    summary = records.read_summary(job.run_dir)  # a SLURM job reports through its records
    return bool(summary) and summary.get("status") == "finished"
