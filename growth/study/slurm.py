"""Studies on SLURM through submitit: every run is a job; the study's order is expressed as SLURM
job dependencies, so nothing waits on the submitting machine.

Stage 1 (dense, the growth methods, IMP-C) is submitted as independent jobs. The matched-budget
runs (PHEW, RigL at each density of the reference run) are submitted at the same time with
``--dependency=afterok:<reference job>``: SLURM holds them until the reference succeeded. Their
densities are not known before the reference has run, so each names a round of the reference
(``budget.snapshot=k``) for as many rounds as the reference can have; a round the reference never
reached makes that run a no-op that says so. Runs that already finished are not submitted again,
nor are runs whose job from an earlier launch of the same study is still queued or running: the
relaunch adopts that job (and a new job that depends on it waits for it).

With ``study.pack=k`` the runs of a stage are submitted k per job (growth.study.pack): each job
asks for the resources of one run and runs its members as processes sharing them.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import submitit
from omegaconf import DictConfig, OmegaConf

from growth import records
from growth.config import SlurmConfig
from growth.kinds import EXECUTORS
from growth.study.pack import PackedRunJob
from growth.study.plan import Job, StudyPlan, finished


class RunJob(submitit.helpers.Checkpointable):
    """A run as a SLURM job. On preemption or time-out submitit calls ``checkpoint`` (inherited),
    which requeues the same call; the run then resumes from its own last checkpoint."""

    def __call__(self, cfg: DictConfig) -> dict:
        from growth.run import run

        return run(cfg)


def make_executor(st, folder: Path, name: str, dependency: str | None = None, trainer=None) -> submitit.AutoExecutor:
    """An executor for one job; `trainer` (the run's trainer config) sets one task per process of
    a data-parallel run."""
    res = OmegaConf.to_container(st.slurm, resolve=True)
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=res["max_num_timeout"])
    extra = dict(res["additional_parameters"] or {})
    params = {
        "name": name,
        "timeout_min": res["time_min"],
        "nodes": int(trainer.nodes) if trainer is not None else 1,
        "tasks_per_node": int(trainer.devices) if trainer is not None else 1,
        "gpus_per_task": res["gpus_per_task"],
        "cpus_per_task": res["cpus_per_task"],
        "mem_gb": res["mem_gb"],
        "slurm_additional_parameters": extra,
    }
    if dependency:
        params["slurm_dependency"] = dependency
    for key in ("partition", "account", "qos", "constraint"):
        if res[key]:
            params[f"slurm_{key}"] = res[key]
    executor.update_parameters(**params)
    return executor


def squeue_reason(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T %r"], capture_output=True, text=True)
    return out.stdout.strip()


LIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


def live_jobs(job_ids: list[str]) -> set[str]:
    """Those of `job_ids` SLURM still queues or runs; a job held by a dependency that can never be
    satisfied is not live (it will never run)."""
    if not job_ids:
        return set()
    out = subprocess.run(["squeue", "-h", "-j", ",".join(sorted(set(job_ids))), "-o", "%i %T %r"], capture_output=True, text=True)
    live = set()
    for line in out.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] in LIVE_STATES and "DependencyNeverSatisfied" not in line:
            live.add(parts[0].split("_")[0])
    return live


@EXECUTORS.register("slurm", schema=SlurmConfig)
class SlurmStudyExecutor:
    """Executor `slurm`: every run a job, stage 2 held by SLURM until its reference succeeded."""

    runs_in_this_process = False

    def __init__(self, plan: StudyPlan):
        self.study = plan
        self.st = plan.st
        self.folder = Path(self.st.slurm.folder or Path(plan.cfg.output.root) / "slurm")
        self.handles: dict[str, str] = {}  # label -> the SLURM job id that runs it
        self.earlier: dict[str, str] = {}  # label -> the live job of an earlier launch

    def find_earlier_jobs(self) -> None:
        """The jobs an earlier launch of this study submitted that SLURM still queues or runs."""
        try:
            before = records.read_json(self.study.dir / "study.json")
        except (OSError, ValueError):
            return
        earlier = {j["label"]: j for j in before.get("jobs", []) if isinstance(j, dict) and j.get("job_id")}
        live = live_jobs([str(j["job_id"]) for j in earlier.values()])
        self.earlier = {label: str(j["job_id"]) for label, j in earlier.items() if str(j["job_id"]) in live}
        # A matched run planned at a round the reference had not reached then, and is not planned
        # now, still has its job: kept in the record so that it is followed, not forgotten.
        planned = {job.label for job in self.study.jobs}
        fields = ("label", "overrides", "stage", "depends_on", "run_dir")
        for label in self.earlier:
            if label not in planned:
                self.study.jobs.append(Job(**{k: earlier[label][k] for k in fields if k in earlier[label]}))

    def adopt(self, job: Job) -> bool:
        """Take over the still-live job of an earlier launch instead of submitting the run twice."""
        job_id = self.earlier.get(job.label)
        if job_id is None:
            return False
        job.job_id = job_id
        job.status = "still queued or running from an earlier launch: not submitted again"
        self.handles[job.label] = job_id
        return True

    def skip_or_adopt(self, job: Job, cfg: DictConfig) -> bool:
        job.run_dir = str(records.run_dir_for(cfg))
        summary = records.read_summary(job.run_dir)
        if summary and summary.get("status") in records.TERMINAL_STATUSES:
            job.status = f"skipped (already {summary['status']})"
            return True
        return self.adopt(job)

    def submit(self, job: Job, dependency_ids: list[str]) -> None:
        cfg = self.study.job_config(job)
        if self.skip_or_adopt(job, cfg):
            return
        dependency = "afterok:" + ":".join(dependency_ids) if dependency_ids else None
        handle = make_executor(self.st, self.folder, job.label, dependency, cfg.trainer).submit(RunJob(), cfg)
        job.job_id = str(handle.job_id)
        job.status = "submitted" + (f" (after {dependency})" if dependency else "")
        self.handles[job.label] = job.job_id

    def submit_pack(self, members: list[tuple[Job, DictConfig]]) -> None:
        """Runs of one stage as one job of one run's resources, every member a process of it."""
        jobs = [job for job, _ in members]
        deps = sorted({j.job_id for j in self.study.jobs if j.job_id and any(j.label in m.depends_on for m in jobs)})
        # afterany, not afterok: the job holding a reference may fail for another member's sake;
        # each member checks its own reference before it starts (growth.study.pack).
        dependency = "afterany:" + ":".join(deps) if deps else None
        name = jobs[0].label if len(jobs) == 1 else f"{jobs[0].label}+{len(jobs) - 1}"
        executor = make_executor(self.st, self.folder, name, dependency, members[0][1].trainer)
        handle = executor.submit(PackedRunJob(), [cfg for _, cfg in members], [j.label for j in jobs], int(self.st.slurm.cpus_per_task))
        for job in jobs:
            job.job_id = str(handle.job_id)
            job.status = f"submitted in a pack of {len(jobs)}" + (f" (after {dependency})" if dependency else "")
            self.handles[job.label] = job.job_id

    def submit_packed(self) -> None:
        """The runs not finished yet, study.pack to a job, stage by stage in plan order (a
        stage-2 job of several seeds' runs waits for each of their references)."""
        todo = []
        for job in self.study.jobs:
            cfg = self.study.job_config(job)
            if not self.skip_or_adopt(job, cfg):
                todo.append((job, cfg))  # so a relaunch packs only what is left
        k = int(self.st.pack)
        for stage in sorted({job.stage for job, _ in todo}):
            members = [(job, cfg) for job, cfg in todo if job.stage == stage]
            for i in range(0, len(members), k):
                self.submit_pack(members[i:i + k])

    def run(self) -> list:
        study = self.study
        study.check(self.runs_in_this_process)
        study.jobs = study.stage1()
        for seed in self.st.seeds:
            study.jobs.extend(study.stage2(seed))
        if study.cfg.dry_run:
            return self.print_plan()
        self.find_earlier_jobs()
        if self.st.pack > 1:
            self.submit_packed()
        else:
            for job in study.jobs:
                deps = [study_job.job_id for study_job in study.jobs if study_job.label in job.depends_on and study_job.job_id]
                self.submit(job, deps)
        study.write(None)
        adopted = [j for j in study.jobs if j.label in self.earlier and j.job_id == self.earlier[j.label]]
        submitted = [j for j in study.jobs if j.job_id and j not in adopted]
        packed = f" for {len(submitted)} runs, up to {self.st.pack} a job" if self.st.pack > 1 else ""
        still = f", {len({j.job_id for j in adopted})} still queued or running from an earlier launch" if adopted else ""
        print(f"study {self.st.name}: submitted {len({j.job_id for j in submitted})} SLURM jobs{packed} "
              f"({len(study.jobs) - len(submitted) - len(adopted)} already finished{still}); records in {study.dir}")
        for job in study.jobs:
            print(f"  {job.job_id or '-':>8}  {job.label:28s} {job.status}")
        print("follow them with:  squeue -u $USER    (held jobs show the reason 'Dependency')\n"
              f"results and the table:  python launch.py {' '.join(study.base)} study={self.st.name} "
              f"study.executor=slurm study.wait=true  (resubmits nothing that finished)")
        if self.st.wait:
            self.wait()
        return study.jobs

    def print_plan(self) -> list:
        study = self.study
        res = OmegaConf.to_container(self.st.slurm, resolve=True)
        packed = f" in jobs of up to {self.st.pack} (each one run's resources, shared)" if self.st.pack > 1 else " as SLURM jobs"
        print(f"dry run: study {self.st.name} would submit {len(study.jobs)} runs{packed} with {res}")
        for job in study.jobs:
            dep = f"  after {', '.join(job.depends_on)} succeeded" if job.depends_on else ""
            print(f"  {job.label:28s} {' '.join(job.overrides)}{dep}")
        return study.jobs

    def wait(self) -> None:
        """Report each job as it ends; a job held by a failed dependency is reported, not hidden."""
        study = self.study
        pending = dict(self.handles)
        started = time.time()
        while pending:
            for label, job_id in list(pending.items()):
                job = next(j for j in study.jobs if j.label == label)
                state = squeue_reason(job_id)
                if state and "DependencyNeverSatisfied" not in state:
                    continue  # still queued or running
                summary = records.read_summary(job.run_dir) or {}
                if "DependencyNeverSatisfied" in state:
                    subprocess.run(["scancel", str(job_id)], check=False)
                    job.status = "not run: its dependency failed"
                elif summary.get("status") in ("finished", "diverged", "failed"):
                    job.status = summary["status"]
                    job.error = summary.get("error")
                elif job.depends_on and not all(finished(j) for j in study.jobs if j.label in job.depends_on):
                    job.status = "not run: its reference did not finish"  # a packed member (growth.study.pack)
                else:
                    job.status = "ended without records (cancelled or killed)"
                print(f"  [{time.time() - started:7.0f} s] {label}: {job.status}" + (f" ({job.error})" if job.error else ""), flush=True)
                del pending[label]
            study.write(None)
            if pending:
                time.sleep(self.st.poll_seconds)
        study.write(time.time() - started)
