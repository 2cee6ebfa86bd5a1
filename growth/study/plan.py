"""Studies: the set of runs behind a comparison figure, executed in dependency order.

Stage 1 runs everything independent (dense, the growth methods, IMP-C); stage 2 is planned from
stage 1's results: the fixed-density methods at the reference run's snapshot densities, each
with its budget matched to the reference. Every run is an ordinary run directory, so a study
that is interrupted and relaunched skips what finished and resumes what did not.
"""

from __future__ import annotations

import csv
import hashlib
import math
import json
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from growth import records
from growth.errors import ConfigError

log = logging.getLogger("growth")

# Settings the study controls itself; the user's other overrides reach every run.
STUDY_KEYS = ("study", "method", "seed", "budget", "extensive.which", "growth.stop.keep_growing", "growth.max_density")
# How and where a study is executed, not what it computes: a relaunch that changes these (another
# partition, GROWTH_SLURM_* set, local instead of SLURM) finds the same study directory.
STUDY_EXECUTION_KEYS = ("executor", "workers", "wait", "poll_seconds", "slurm")


def study_identity(st: DictConfig, base_overrides: Sequence[str]) -> str:
    """A hash of what the study computes: its own settings less execution, and the overrides
    that change its runs (those a run's identity ignores, such as output or logger, left out)."""
    settings = {k: v for k, v in OmegaConf.to_container(st, resolve=True).items() if k not in STUDY_EXECUTION_KEYS}
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
        for m in st.growth_methods:
            jobs.append(
                Job(
                    f"{m}/s{seed}",
                    [f"method={m}", f"seed={seed}", "extensive.which=all", "growth.stop.keep_growing=true", f"growth.max_density={st.max_density}"],
                    1,
                )
            )
    return jobs


def plan_matched(st, seed: int, reference_dir: Path, rounds: int, depends_on: list[str]) -> list[Job]:
    """Fixed-density runs at the densities of the reference's rounds 0..rounds-1, each with its
    budget matched to the reference at that density (budget.snapshot names the round)."""
    jobs = []
    for m in st.matched_methods:
        for k in range(rounds):
            jobs.append(
                Job(
                    f"{m}/s{seed}/r{k:03d}",
                    [f"method={m}", f"seed={seed}", f"budget.match={st.reference}", f"budget.reference={reference_dir}", f"budget.snapshot={k}"],
                    2,
                    depends_on=list(depends_on),
                )
            )
    return jobs


def finished_rounds(run_dir: Path) -> int:
    with open(Path(run_dir) / "rounds.csv", newline="") as f:
        return len(list(csv.DictReader(f)))


def predicted_rounds(cfg: DictConfig) -> int:
    """How many rounds a growth run of this config can have at most (an upper bound: growth
    densities are geometric, capped by max_density and max_rounds)."""
    g = cfg.growth
    d, n = g.seed_density, 1
    while d < g.max_density and n < g.max_rounds:
        d = min(d * g.growth_ratio, g.max_density)
        n += 1
    return n + 1  # one spare round: edge counts round, a run may take one step more


def _run_one(cfg: DictConfig) -> dict:
    from growth.run import run

    return run(cfg)


class Study:
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
        cfg.output.progress = False if self.st.workers > 1 else cfg.output.progress
        if cfg.logger.name == "wandb" and cfg.logger.group is None:
            cfg.logger.group = self.dir.name  # the study is one group on the dashboard
        return cfg

    def check(self) -> None:
        """Compose and validate every stage-1 config before anything runs."""
        from growth.run import prepare

        for job in plan_independent(self.st):
            cfg = self.job_config(job)
            prepare(cfg, before_submission=True)
            if self.st.executor == "local" and cfg.trainer.devices * cfg.trainer.nodes > 1:
                raise ConfigError(
                    f"study.executor=local runs every job in this process, but trainer.devices={cfg.trainer.devices} "
                    f"x trainer.nodes={cfg.trainer.nodes} asks for several: use study.executor=slurm"
                )

    def reference_job(self, seed: int) -> Job | None:
        return next((j for j in self.jobs if j.label == f"{self.st.reference}/s{seed}"), None)

    def run(self) -> list[Job]:
        self.check()
        if self.st.executor == "slurm":
            from growth.slurm import SlurmStudyExecutor

            return SlurmStudyExecutor(self).run()
        started = time.time()
        stage1 = plan_independent(self.st)
        self.jobs = list(stage1)
        if self.cfg.dry_run:
            return self.print_plan()
        self.execute(stage1)
        for seed in self.st.seeds:
            ref = self.reference_job(seed)
            if ref is not None and _finished(ref):
                stage2 = plan_matched(self.st, seed, Path(ref.run_dir), finished_rounds(Path(ref.run_dir)), [ref.label])
                self.jobs.extend(stage2)
                self.execute(stage2)
            else:
                for m in self.st.matched_methods:
                    self.jobs.append(Job(f"{m}/s{seed}", [], 2, [f"{self.st.reference}/s{seed}"], status="not run: reference did not finish"))
        self.write(time.time() - started)
        self.report()
        return self.jobs

    def report(self) -> None:
        """Figures, tables and the HTML report of what the study produced."""
        try:
            from analysis import write_report

            written = write_report(self.dir, self.dir / "analysis")
            log.info("study %s: analysis written to %s (%d files)", self.st.name, self.dir / "analysis", len(written))
        except Exception as exc:  # the records stand; a plotting problem never fails a study
            log.warning("study %s: analysis report not written: %s", self.st.name, exc)

    def print_plan(self) -> list[Job]:
        print(f"dry run: study {self.st.name} would run {len(self.jobs)} jobs in stage 1, then "
              f"{', '.join(self.st.matched_methods)} at each density of {self.st.reference} with matched budgets:")
        for job in self.jobs:
            cfg = self.job_config(job)
            print(f"  stage {job.stage}  {job.label:28s} {' '.join(job.overrides)}  ->  {records.run_dir_for(cfg)}")
        return self.jobs

    def execute(self, jobs: list[Job]) -> None:
        configs = [self.job_config(j) for j in jobs]
        for job, cfg in zip(jobs, configs):
            job.run_dir = str(records.run_dir_for(cfg))
        if self.st.workers > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(self.st.workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_run_one, cfg) for cfg in configs]
                for job, fut in zip(jobs, futures):
                    self._record(job, fut.result, 0.0)
        else:
            for i, (job, cfg) in enumerate(zip(jobs, configs)):
                log.info("study %s: run %d/%d %s", self.st.name, i + 1, len(jobs), job.label)
                t0 = time.time()
                self._record(job, lambda cfg=cfg: _run_one(cfg), t0)
        self.write(None)

    def _record(self, job: Job, result: Callable[[], dict], t0: float) -> None:
        try:
            summary = result()
            job.status = "skipped (finished before)" if summary.get("skipped") else summary.get("status", "unknown")
            if summary.get("status") == "diverged":
                job.status, job.error = "diverged", summary.get("error")
        except Exception as exc:  # a failed run never stops the study
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("study run %s failed:\n%s", job.label, traceback.format_exc())
        if t0:
            job.seconds = time.time() - t0

    def write(self, seconds: float | None) -> None:
        data = {
            "study": OmegaConf.to_container(self.st, resolve=True),
            "overrides": list(self.base),
            "seconds": seconds,
            "jobs": [vars(j) for j in self.jobs],
        }
        records.atomic_write_json(self.dir / "study.json", data)
        if seconds is not None:
            table = study_table(self.jobs, self.st.reference)
            records.atomic_write_text(self.dir / "table.md", table + "\n")


def _finished(job: Job) -> bool:
    if job.run_dir is None:
        return False
    if job.status == "finished" or job.status.startswith("skipped"):
        return True
    summary = records.read_summary(job.run_dir)  # a SLURM job reports through its records
    return bool(summary) and summary.get("status") == "finished"


def study_table(jobs: Sequence[Job], reference_method: str | None = None) -> str:
    """Per method: the densities reached, test accuracy at each, and cost (dense-run units)."""
    by_method: dict[str, list[dict]] = {}
    notes = []
    for job in jobs:
        method = job.label.split("/")[0]
        if not _finished(job):
            notes.append(f"{job.label}: {job.status}" + (f" ({job.error})" if job.error else ""))
            continue
        summary = records.read_summary(job.run_dir) or {}
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
