"""Several small runs as processes of one SLURM job (``study.pack=k``), sharing its GPU and CPUs.

A run of a study is often tiny next to a GPU; one run per job leaves most of it idle. A packed job
starts one process per member, each doing exactly what a job of one run does (``growth.run.run``
on its own config, in its own run directory, under its own lock), and waits for all of them. So a
member's records, its resume and its skip-when-finished are those of the run alone.

- The processes share what the job was given: the same ``CUDA_VISIBLE_DEVICES`` (one GPU, or the
  job's), and the job's ``cpus_per_task`` split evenly as each member's ``trainer.cpu_threads``
  (unless the run sets its own), so k members do not each start a thread per core.
- A member that fails or dies (an exception, the OOM killer, a signal) does not stop the others;
  one that died before it could say so gets a summary saying ``failed`` from this process. The
  job exits non-zero when any member failed, so SLURM's own state tells of it too.
- Preemption and time limits: submitit's handler in this process requeues the whole job (the
  same members); the members ignore SLURM's warning signals and are ended here, so each resumes
  from its own last checkpoint when the job starts again, and a finished member is skipped.
- A member that trains on a reference (a matched run) starts only if its reference finished:
  its packed job waits for the jobs of every member's reference to end (``afterany``), not
  to succeed, because a job holding a reference may fail for another member's sake.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time

import submitit
from omegaconf import DictConfig

from growth import records

log = logging.getLogger("growth")

# SLURM's preemption and time-limit warnings, and submitit's: this job's process handles them.
WARNING_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT)


def member_threads(cpus_per_task: int, members: int) -> int:
    """Each member's share of the job's CPUs (at least one thread)."""
    return max(1, int(cpus_per_task) // max(1, members))


def become_member(threads: int) -> None:
    """What a member process does first: leave SLURM's warnings to the job's own process (which
    ends the members on a requeue), and take its share of the CPUs as torch threads (on a GPU
    too: the CPU-side work of k members would otherwise start k x cores threads). A run that
    sets trainer.cpu_threads sets its own."""
    for sig in WARNING_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)


def wait_for_members(procs: list) -> None:
    """Wait for every member; short sleeps, so submitit's signal handler runs promptly."""
    while any(p.is_alive() for p in procs):
        time.sleep(1.0)


def end_members(procs: list) -> None:
    """End the members still running: reached early on a requeue (submitit exits the job's
    process), so each resumes from its checkpoint when the job starts again."""
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()


def _run_member(cfg: DictConfig, threads: int) -> None:
    """One member, in its own process: a run exactly as a job of one run does it."""
    become_member(threads)
    from growth.run import run

    run(cfg)  # a failure is written to the run's summary.json by run() itself; the exit code says it


def reference_finished(cfg: DictConfig) -> bool | None:
    """For a matched run: whether its reference finished (None for a run without a reference)."""
    reference = cfg.budget.get("reference") if cfg.budget.get("match") is not None else None
    if reference is None:
        return None
    summary = records.read_summary(reference)
    return bool(summary) and summary.get("status") == "finished"


def _record_death(cfg: DictConfig, exitcode: int) -> None:
    """A member that ended without saying how (killed, out of memory) is recorded as failed, so
    the study's table lists it; a later relaunch resumes it like any failed run."""
    run_dir = records.run_dir_for(cfg)
    summary = records.read_summary(run_dir) or {}
    if not run_dir.exists() or summary.get("status") in (*records.TERMINAL_STATUSES, "failed"):
        return  # failed before its run directory existed (the job's log says why), or said so itself
    how = f"signal {-exitcode}" if exitcode < 0 else f"exit code {exitcode}"
    records.atomic_write_json(run_dir / "summary.json", {
        **summary, **records.run_fields(cfg), "status": "failed", "run_dir": str(run_dir),
        "error": f"the run's process ended without finishing ({how}) in a packed SLURM job",
    })


def run_members(configs: list[DictConfig], labels: list[str], cpus_per_task: int) -> list[dict]:
    """Run every member in its own process at once and wait for all; one result per member."""
    ctx = mp.get_context("spawn")  # a fresh interpreter per member, as a job of one run has
    threads = member_threads(cpus_per_task, len(configs))
    results: list[dict] = [{"label": label, "status": "planned"} for label in labels]
    procs: dict[int, mp.process.BaseProcess] = {}
    try:
        for i, cfg in enumerate(configs):
            done = reference_finished(cfg)
            if done is False:
                results[i].update(status="not run: its reference did not finish")
                log.error("packed member %s not run: its reference %s did not finish", labels[i], cfg.budget.reference)
                continue
            cfg = cfg.copy()
            if cfg.trainer.cpu_threads == 0:  # not an identity setting: the run directory is the same
                cfg.trainer.cpu_threads = threads
            proc = ctx.Process(target=_run_member, args=(cfg, int(cfg.trainer.cpu_threads)), name=f"member-{labels[i]}")
            proc.start()
            procs[i] = proc
        wait_for_members(list(procs.values()))
        for i, proc in procs.items():
            proc.join()
            summary = records.read_summary(records.run_dir_for(configs[i])) or {}
            if proc.exitcode != 0:
                _record_death(configs[i], proc.exitcode)
                summary = records.read_summary(records.run_dir_for(configs[i])) or {}
            status = summary.get("status") or f"failed before it had records (exit code {proc.exitcode}): see the job's log"
            results[i].update(status=status, error=summary.get("error"), exitcode=proc.exitcode)
    finally:
        end_members(list(procs.values()))
    return results


class PackedRunJob(submitit.helpers.Checkpointable):
    """k runs as one SLURM job. On preemption or time-out submitit calls ``checkpoint``
    (inherited), which requeues the same call: every member then resumes or is skipped."""

    def __call__(self, configs: list[DictConfig], labels: list[str], cpus_per_task: int) -> list[dict]:
        results = run_members(configs, labels, cpus_per_task)
        for r in results:
            log.info("packed member %s: %s", r["label"], r["status"])
        failed = [r for r in results if r["status"] not in records.TERMINAL_STATUSES]
        if failed:
            raise RuntimeError("packed members did not finish: " + "; ".join(f"{r['label']}: {r['status']}" + (
                f" ({r.get('error')})" if r.get("error") else "") for r in failed))
        return results
