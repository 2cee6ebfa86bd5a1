"""Small sweep runs packed per SLURM job: ``hydra/launcher=slurm_packed hydra.launcher.pack=k``.

Hydra's submitit launcher submits one job per sweep job. This launcher submits one job per k of
them, with the resources of one (its GPU, its CPUs), and runs the k as processes of it, each doing
exactly what a job of the plain launcher does (Hydra's ``run_job`` with the launcher's task
function: its own output folder, callbacks, run directory, lock and records). So a member's
records, its resume and its skip-when-finished are those of the job alone; its CPU threads are
the job's ``cpus_per_task`` split among the members (unless the run sets ``trainer.cpu_threads``).

Preemption and time limits requeue the whole job (submitit's handler in the job's process); the
members are ended and each resumes from its own checkpoint when the job starts again, and a
member that had finished is skipped. A member that fails does not stop the others.
"""

# (no "from __future__ import annotations": Hydra imports plugins outside sys.modules, where a
# dataclass cannot resolve string annotations)

import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

log = logging.getLogger(__name__)


@dataclass
class PackedSlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.growth_packed_launcher.PackedSlurmLauncher"
    # Sweep jobs a SLURM job runs at once, as processes sharing its resources.
    pack: int = 2


ConfigStore.instance().store(group="hydra/launcher", name="submitit_slurm_packed", node=PackedSlurmQueueConf, provider="growth")


def failed(params: tuple, error: BaseException) -> JobReturn:
    """The JobReturn of a member that failed (params: the plain launcher's job arguments)."""
    return JobReturn(overrides=list(params[0]), status=JobStatus.FAILED, _return_value=error)


def _member(launcher: "PackedSlurmLauncher", params: tuple, threads: int, result_file: str) -> None:
    """One sweep job in its own (forked) process, as the plain launcher's job runs it."""
    import cloudpickle

    from growth.study.pack import become_member

    become_member(threads)
    try:
        ret = SlurmLauncher.__call__(launcher, *params)
    except BaseException as exc:  # noqa: BLE001  (said in the parent's JobReturn)
        ret = failed(params, exc)
    Path(result_file).write_bytes(cloudpickle.dumps(ret))


class PackedSweepJob:
    """The callable a packed SLURM job runs: its members, then their JobReturns in order.
    Checkpointable (submitit requeues it on preemption or time-out with the same members)."""

    def __init__(self, launcher: "PackedSlurmLauncher"):
        self.launcher = launcher

    def __call__(self, members: List[tuple]) -> List[JobReturn]:
        import cloudpickle
        import submitit

        # (imported here, not when Hydra scans its plugins at every start)
        from growth.study.pack import end_members, member_threads, wait_for_members

        env = submitit.JobEnvironment()
        folder = Path(str(env.paths.folder))
        threads = member_threads(int(self.launcher.params.get("cpus_per_task") or 1), len(members))
        ctx = mp.get_context("fork")  # the launcher (its task function, Hydra's context) as it is
        procs, files = [], []
        try:
            for params in members:
                result_file = folder / f"{env.job_id}_member{params[2]}.pkl"
                result_file.unlink(missing_ok=True)
                proc = ctx.Process(target=_member, args=(self.launcher, params, threads, str(result_file)))
                proc.start()
                procs.append(proc)
                files.append(result_file)
            wait_for_members(procs)
        finally:
            end_members(procs)
        results = []
        for proc, result_file, params in zip(procs, files, members):
            proc.join()
            if result_file.exists():
                results.append(cloudpickle.loads(result_file.read_bytes()))
            else:
                results.append(failed(params, RuntimeError(
                    f"sweep job #{params[2]} ({' '.join(params[0])}) ended without a result (exit code {proc.exitcode})")))
        return results

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class PackedSlurmLauncher(SlurmLauncher):
    """hydra/launcher=slurm_packed: k sweep jobs to a SLURM job."""

    def __init__(self, **params: Any) -> None:
        self.pack = int(params.pop("pack", 2))
        super().__init__(**params)

    def executor(self):
        """submitit's executor with this launcher's resources, as the plain launcher sets them."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        members = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            members.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        packs = [members[i:i + self.pack] for i in range(0, len(members), self.pack)]
        log.info(f"{len(members)} sweep jobs in {len(packs)} SLURM jobs of up to {self.pack}")
        jobs = self.executor().map_array(PackedSweepJob(self), packs)
        return [ret for job in jobs for ret in job.results()[0]]
