"""Executor `local`: a study's runs in this process (study.workers=1) or in local worker
processes, stage 1 first, then the matched runs planned from the reference's finished rounds.

study.pack=k here means what study.workers=k means (k runs at once, as processes sharing this
machine's GPU and CPUs): local workers already are packed runs, so the larger of the two counts."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from omegaconf import DictConfig

from growth import records
from growth.kinds import EXECUTORS
from growth.study.plan import Job, StudyPlan, finished

log = logging.getLogger("growth")


def _run_one(cfg: DictConfig) -> dict:
    from growth.run import run

    return run(cfg)


@EXECUTORS.register("local")
class LocalExecutor:
    runs_in_this_process = True

    def __init__(self, plan: StudyPlan):
        self.plan = plan
        self.st = plan.st

    def run(self) -> list[Job]:
        plan = self.plan
        plan.check(self.runs_in_this_process)
        started = time.time()
        stage1 = plan.stage1()
        plan.jobs = list(stage1)
        if plan.cfg.dry_run:
            return self.print_plan()
        self.execute(stage1)
        for seed in self.st.seeds:
            ref = plan.reference_job(seed)
            stage2 = plan.stage2(seed) if ref is not None and finished(ref) else [
                Job(f"{m}/s{seed}", [], 2, [f"{self.st.reference}/s{seed}"], status="not run: reference did not finish")
                for m in self.st.matched_methods
            ]
            plan.jobs.extend(stage2)
            self.execute([j for j in stage2 if j.status == "planned"])
        plan.write(time.time() - started)
        return plan.jobs

    def print_plan(self) -> list[Job]:
        plan = self.plan
        print(f"dry run: study {self.st.name} would run {len(plan.jobs)} jobs in stage 1, then "
              f"{', '.join(self.st.matched_methods)} at each density of {self.st.reference} with matched budgets:")
        for job in plan.jobs:
            cfg = plan.job_config(job)
            print(f"  stage {job.stage}  {job.label:28s} {' '.join(job.overrides)}  ->  {records.run_dir_for(cfg)}")
        return plan.jobs

    def execute(self, jobs: list[Job]) -> None:
        configs = [self.plan.job_config(j) for j in jobs]
        for job, cfg in zip(jobs, configs):
            job.run_dir = str(records.run_dir_for(cfg))
        processes = self.plan.local_processes()
        if processes > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_run_one, cfg) for cfg in configs]
                for job, fut in zip(jobs, futures):
                    _record(job, fut.result, 0.0)
        else:
            for i, (job, cfg) in enumerate(zip(jobs, configs)):
                log.info("study %s: run %d/%d %s", self.st.name, i + 1, len(jobs), job.label)
                t0 = time.time()
                _record(job, lambda cfg=cfg: _run_one(cfg), t0)
        self.plan.write(None)


def _record(job: Job, result: Callable[[], dict], t0: float) -> None:
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
