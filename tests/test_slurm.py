"""Sweeps, studies and preemption on a real SLURM cluster (started by .ci/run, or by
scripts/slurm_local.sh), and the same paths through submitit's local executor.

In CI the cluster must be there: a missing one fails loudly instead of skipping."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST, REPO, compose_cfg
from tests.test_run import comparable_records

pytestmark = pytest.mark.slow

# Small jobs that fit the one CPU node: no GPU, one CPU, little memory.
SLURM_ENV = {"GROWTH_SLURM_GPUS": "0", "GROWTH_SLURM_CPUS": "1", "GROWTH_SLURM_MEM_GB": "1", "GROWTH_SLURM_TIME_MIN": "20"}


def slurm_available() -> bool:
    if shutil.which("sbatch") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and any(state in out.stdout for state in ("idle", "mix", "alloc"))


def require_slurm() -> None:
    """Skip without a SLURM cluster, except in CI, where a missing one fails loudly."""
    if not slurm_available():
        if os.environ.get("CI"):
            raise RuntimeError("CI is set but no SLURM cluster answers (sinfo): .ci/run must start it")
        pytest.skip("no SLURM cluster here: run scripts/slurm_local.sh to start one")


@pytest.fixture(params=["slurm", "local"])
def cluster(request):
    if request.param == "slurm":
        require_slurm()
    return request.param


def launch(args, timeout=600, env_extra=None):
    env = {**os.environ, **SLURM_ENV, **(env_extra or {})}
    return subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def launch_in_background(args) -> subprocess.Popen:
    """The launcher started as launch() starts it, without waiting for it (output in .stdout)."""
    return subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=REPO, env={**os.environ, **SLURM_ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_round(run_dir: Path, launcher: subprocess.Popen, at_least: int = 2) -> None:
    """Poll the run's checkpoint until its growth round is `at_least`, while the launcher runs."""
    from growth.records import load_checkpoint

    deadline = time.time() + 300
    while True:
        assert time.time() < deadline and launcher.poll() is None, f"the job never reached growth round {at_least}"
        try:
            if load_checkpoint(run_dir)["state"]["round"] >= at_least:
                return
        except Exception:  # not written yet, or being replaced
            pass
        time.sleep(0.05)


def summaries(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/summary.json")}


def test_multirun_of_three_runs_through_the_launcher(cluster, tmp_path):
    proc = launch(["-m", "seed=0,1,2", f"hydra/launcher={cluster}", f"output.root={tmp_path}", *FAST])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = summaries(tmp_path)
    assert sorted(s["seed"] for s in found.values()) == [0, 1, 2]
    assert all(s["status"] == "finished" for s in found.values())
    assert "sweep report: 3 finished" in proc.stdout
    if cluster == "slurm":
        assert len(list((tmp_path / "slurm").glob("*/*_submitted.pkl"))) == 3, "a job array went through sbatch"


def test_a_diverging_run_does_not_stop_the_sweep_and_is_reported(cluster, tmp_path):
    proc = launch(["-m", "trainer.round_lr=1e30,0.05", "trainer.momentum=0", f"hydra/launcher={cluster}", f"output.root={tmp_path}", *FAST])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    statuses = sorted(s["status"] for s in summaries(tmp_path).values())
    assert statuses == ["diverged", "finished"]
    assert "1 diverged, 1 finished" in proc.stdout


def test_bad_sweep_is_rejected_before_anything_is_submitted(tmp_path):
    proc = launch(["-m", "seed=0,1", "growth.growth_ratio=1.5,0.9", "hydra/launcher=slurm", f"output.root={tmp_path}"])
    assert proc.returncode == 2
    assert "growth.growth_ratio" in proc.stderr and "not launched" in proc.stderr
    assert not (tmp_path / "slurm").exists()


def test_a_corrupt_dataset_file_stops_a_sweep_before_anything_is_submitted(tmp_path):
    """The sweep reads the dataset's arrays once before submitting: a damaged file is one error
    at the login node, not a failure in every job of the array."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    (folder / "mnist.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 64)  # a truncated download
    proc = launch(["-m", "seed=0,1", "dataset=mnist", f"dataset.root={tmp_path / 'data'}", "model=lenet300",
                   "hydra/launcher=slurm", f"output.root={tmp_path / 'results'}"])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "not launched" in proc.stderr and "mnist.npz" in proc.stderr and "To get it again" in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("how", ["study", "sweep"])
def test_gpus_asked_for_on_a_partition_without_them_is_one_line_naming_the_setting(how, tmp_path):
    """The local node has no GPUs and the default asks for one: sbatch refuses the generic resource.
    A study (its executor's sbatch) and a sweep (Hydra's submitit launcher) say so in one line."""
    require_slurm()
    args = ([*STUDY, "study.executor=slurm"] if how == "study" else ["-m", "seed=0,1", "hydra/launcher=slurm", *FAST])
    proc = launch([*args, f"output.root={tmp_path}"], env_extra={"GROWTH_SLURM_GPUS": "1"})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "SLURM refused the submission" in proc.stderr and "gres" in proc.stderr.lower()
    assert "GROWTH_SLURM_GPUS=0" in proc.stderr
    assert ("study.slurm.gpus_per_task=0" if how == "study" else "hydra.launcher.gpus_per_task=0") in proc.stderr
    assert not list(tmp_path.rglob("summary.json")), "no run started"


def test_dry_run_prints_jobs_and_resources_and_submits_nothing(tmp_path):
    proc = launch(["-m", "method=pwmpr,rg", "dry_run=true", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"output.root={tmp_path}"])
    assert proc.returncode == 0, proc.stderr
    assert "2 jobs would be launched" in proc.stdout and "'partition': 'gpu'" in proc.stdout
    assert "method=rg" in proc.stdout
    assert not list(tmp_path.glob("*/summary.json")) and not (tmp_path / "slurm").exists()


STUDY = ["study=compare", "study.seeds=[0]", *FAST, "growth.max_rounds=3", "study.max_density=0.02", "study.matched_methods=[phew]",
         "study.baselines=[dense]", "study.growth_methods=[pwmpr]", "trainer.epochs=8"]


def test_study_on_slurm_holds_matched_jobs_until_the_reference_succeeded(tmp_path):
    require_slurm()
    proc = launch([*STUDY, "study.executor=slurm", f"output.root={tmp_path}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (study_file,) = (tmp_path / "studies").glob("compare-*/study.json")
    study = json.loads(study_file.read_text())
    jobs = {j["label"]: j for j in study["jobs"]}
    ref = jobs["pwmpr/s0"]
    matched = [j for j in study["jobs"] if j["label"].startswith("phew/")]
    assert matched and all(j["job_id"] for j in matched)
    # Right after submission the matched jobs are held by their dependency on the reference.
    held = subprocess.run(["squeue", "-h", "-o", "%i %r", "-j", ",".join(j["job_id"] for j in matched)], capture_output=True, text=True).stdout
    ref_done = (Path(ref["run_dir"]) / "summary.json").exists() and json.loads((Path(ref["run_dir"]) / "summary.json").read_text())["status"] == "finished"
    assert ref_done or "Dependency" in held, held
    # Relaunched while they are held, the study adopts its jobs instead of submitting them twice.
    early = launch([*STUDY, "study.executor=slurm", f"output.root={tmp_path}"])
    assert early.returncode == 0, early.stdout[-3000:] + early.stderr[-3000:]
    assert "submitted 0 SLURM jobs" in early.stdout, early.stdout
    again_jobs = {j["label"]: j for j in json.loads(study_file.read_text())["jobs"]}
    for j in matched:  # each is the same job, or finished in the meantime
        again = again_jobs[j["label"]]
        assert again["job_id"] == j["job_id"] or again["status"].startswith("skipped"), (again, early.stdout)
    queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert len(queued) == len(set(queued)) and len(queued) <= len(study["jobs"]), queued
    deadline = time.time() + 600
    while time.time() < deadline:
        if subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip() == "":
            break
        time.sleep(2)
    ref_summary = Path(ref["run_dir"]) / "summary.json"
    ref_end = ref_summary.stat().st_mtime
    ran = 0
    for j in matched:
        summary = json.loads((Path(j["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "finished"
        assert (Path(j["run_dir"]) / "config.yaml").stat().st_mtime >= ref_end - 1, "a matched run started before its reference ended"
        ran += 0 if summary.get("not_applicable") else 1
    assert ran == 3, "one matched run per round of the reference (3 rounds)"
    # Relaunched, the study submits nothing new.
    again = launch([*STUDY, "study.executor=slurm", f"output.root={tmp_path}"])
    assert "submitted 0 SLURM jobs" in again.stdout, again.stdout
    assert list((tmp_path / "studies").glob("compare-*/study.json")) == [study_file]


def task_pids(controller_pid: int) -> list[int]:
    """The task processes submitit's local controller started (its children)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == controller_pid:
            pids.append(int(stat.parent.name))
    return pids


def preempt(job, cluster: str) -> None:
    """The signal SLURM sends before preemption or a time limit (USR2); submitit checkpoints and
    requeues the job. On SLURM: submitit's own test hook (its preemption variant also sends SIGTERM,
    which races with the `scontrol requeue` it starts; USR2 alone exercises the same path). Locally
    the hook signals submitit's controller, which does not forward USR2, so the task gets it."""
    if cluster == "slurm":
        job._interrupt(timeout=True)
        return
    pids = task_pids(job._process.pid)
    assert pids, "the local job's task process was found"
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)


def submit_run(cfg, cluster: str, folder: Path, tasks: int = 1):
    """One run as a submitit job (RunJob) on the small node; `tasks` processes."""
    import submitit

    from growth.study.slurm import RunJob

    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster, slurm_max_num_timeout=3)
    executor.update_parameters(timeout_min=20, cpus_per_task=1, mem_gb=1, gpus_per_node=0, tasks_per_node=tasks)
    # The job inherits this process's environment; set SLURM_ENV for the submission only, so it
    # does not leak into later tests' configs (GROWTH_SLURM_* resolve into study.slurm).
    saved = dict(os.environ)
    os.environ.update(SLURM_ENV)
    try:
        return executor.submit(RunJob(), cfg)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_for_checkpoint(run_dir: Path, what: str, reached, on_poll=None) -> dict:
    """Poll the run's checkpoint until `reached(state)`; the state then."""
    from growth.records import load_checkpoint

    deadline = time.time() + 300
    while time.time() < deadline:
        if on_poll is not None:
            on_poll()
        ckpt = load_checkpoint(run_dir) if (run_dir / "checkpoint.pt").exists() else None
        if ckpt is not None and reached(ckpt["state"]):
            return ckpt["state"]
        time.sleep(0.02)
    pytest.fail(f"the job never reached {what}")


def test_preempted_in_a_growth_round_and_again_in_extensive_training_ends_like_an_uninterrupted_run(cluster, tmp_path):
    """Issue 7, fault 8: one job preempted in each phase, so requeued twice (a growth round, then
    extensive training), ends with the records of a run never interrupted. Each requeued process
    is seen taking over the run's lock, and its log says it resumed. (It holds a single
    preemption's case: the first requeue is one.)"""
    from growth.records import run_dir_for
    from growth.run import run

    overrides = [*FAST, "growth.max_rounds=6", "growth.timing.epochs=3", "trainer.epochs=120", "output.progress=true"]
    cfg = compose_cfg(overrides, tmp_path=tmp_path / "preempted")
    reference = compose_cfg(overrides, tmp_path=tmp_path / "reference")
    run(reference)
    job = submit_run(cfg, cluster, tmp_path / "jobs")
    run_dir = run_dir_for(cfg)
    holders: list[int] = []  # the processes that held the run's lock, in order

    def note_holder():
        try:
            pid = json.loads((run_dir / "run.lock").read_text())["pid"]
            if not holders or holders[-1] != pid:
                holders.append(pid)
        except (OSError, ValueError, KeyError):
            pass

    def watch(what, reached):
        return wait_for_checkpoint(run_dir, what, reached, on_poll=note_holder)

    def extensive_epoch(state) -> int:
        prog = [p for k, p in state["progress"].items() if k.startswith("extensive:") and p["result"] is None]
        return prog[0]["epoch"] if state["phase"] == "extensive" and prog else -1

    watch("growth round 2", lambda s: s["phase"] == "growth" and s["round"] >= 2)
    preempt(job, cluster)
    first = holders[-1]
    # The requeued process takes over the lock, then trains on into extensive training.
    state = watch("extensive epoch 5 in the requeued job", lambda s: len(holders) >= 2 and extensive_epoch(s) >= 5)
    assert extensive_epoch(state) < 100, "preempted mid-way through extensive training"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    preempt(job, cluster)
    second = holders[-1]
    while not job.done():
        note_holder()
        time.sleep(0.02)
    summary = job.result()
    assert summary["status"] == "finished"
    log = "\n".join(p.read_text() for p in (tmp_path / "jobs").glob("*_log.*"))
    assert "resuming" in log, "the requeued job resumed from its checkpoint"
    assert len(holders) == 3 and first != second != holders[-1], holders
    assert comparable_records(run_dir) == comparable_records(run_dir_for(reference))


# Growth rounds take a fraction of a second here; the 800 epochs after them take 18 s or more:
# longer than SLURM's KillWait (10 s in scripts/slurm_local.sh), during which a job that scancel
# sent SIGTERM (which submitit ignores) goes on, so a job cancelled at round 2 cannot finish.
LONG_RUN = [*FAST, "growth.max_rounds=8", "growth.timing.epochs=3", "trainer.epochs=800", "output.progress=true"]


@pytest.fixture(scope="module")
def long_run_records(tmp_path_factory):
    """The records of LONG_RUN never interrupted, for the fault tests to end with."""
    from growth.records import run_dir_for
    from growth.run import run

    reference = compose_cfg(LONG_RUN, tmp_path=tmp_path_factory.mktemp("reference"))
    run(reference)
    return comparable_records(run_dir_for(reference))


def test_a_sweep_job_cancelled_mid_run_resumes_from_its_checkpoint_when_the_sweep_is_relaunched(tmp_path, long_run_records):
    """scancel kills a sweep's job mid-run; the same sweep launched again resumes that run from its
    checkpoint (it does not start over) and ends with the records of a run never interrupted."""
    require_slurm()
    from growth.records import load_checkpoint, run_dir_for
    from tests.test_packing import queued, wait_until_gone

    sweep_root = tmp_path / "sweep"
    sweep = ["-m", "seed=0", "hydra/launcher=slurm", f"output.root={sweep_root}", *LONG_RUN]
    first = launch_in_background(sweep)
    run_dir = run_dir_for(compose_cfg(LONG_RUN, tmp_path=sweep_root))
    wait_for_round(run_dir, first)
    # The sweep's own job: submitit names a folder by each job id (hydra/launcher=slurm's submitit_folder).
    jobs = [p.name for p in (sweep_root / "slurm").iterdir() if p.is_dir() and p.name[0].isdigit()]
    subprocess.run(["scancel", "--full", "--signal=KILL", *jobs], check=True)
    assert jobs
    wait_until_gone(jobs)
    first.kill()  # the user stops the first sweep (which would wait on a job SLURM no longer knows) ...
    first.communicate(timeout=60)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running", "killed mid-way"
    killed_at = load_checkpoint(run_dir)["state"]["round"]
    again = launch(sweep)  # ... and launches the same sweep again
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = "\n".join(p.read_text() for p in (sweep_root / "slurm").rglob("*_log.*"))
    assert "resuming" in log and killed_at >= 2, "the relaunched job resumed from the checkpoint"
    assert not queued(jobs)
    assert comparable_records(run_dir) == long_run_records


def task_of(folder: Path) -> int | None:
    """The pid of the python task submitit runs for a job whose folder is under `folder`."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        is_python = Path(argv[0].decode(errors="replace")).name.startswith("python")  # not the srun that starts it
        if is_python and b"submitit.core._submit" in argv and any(str(folder).encode() in a for a in argv):
            return int(cmdline.parent.name)
    return None


def warned(pid: int) -> bool:
    """Whether the stopped task `pid` was sent USR2: pending, or (SLURM continues a stopped task
    it signals) no longer stopped, or already gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    status = {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}
    pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    return bool(pending & (1 << (signal.SIGUSR2 - 1))) or not status["State"].startswith("T")


def test_a_sweep_job_that_reaches_its_time_limit_requeues_and_resumes(tmp_path, long_run_records):
    """A real time limit: one minute, with SLURM's warning (USR2) asked for 50 s before it. SLURM
    sends that warning at its own coarse moment, so the job is stopped (SIGSTOP) after growth round
    2 until the warning waits for it, then continued: submitit checkpoints and requeues it, the run
    resumes from its checkpoint, and ends with the records of a run never interrupted."""
    require_slurm()
    from growth.records import run_dir_for

    sweep_root = tmp_path / "sweep"
    sweep = ["-m", "seed=0", "hydra/launcher=slurm", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=50",
             f"output.root={sweep_root}", *LONG_RUN]
    proc = launch_in_background(sweep)
    run_dir = run_dir_for(compose_cfg(LONG_RUN, tmp_path=sweep_root))
    wait_for_round(run_dir, proc)
    pid = task_of(sweep_root / "slurm")
    assert pid is not None, "the job's task process was found"
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.time() + 120
        while not warned(pid):
            assert time.time() < deadline, "SLURM never sent the time-limit warning"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    (job_dir,) = [p for p in (sweep_root / "slurm").iterdir() if p.is_dir() and p.name[0].isdigit()]
    log = "\n".join(p.read_text() for p in job_dir.glob("*_log.*"))
    assert "this job is timed-out" in log and "Requeued job" in log, log[-3000:]
    assert "resuming" in log, "the requeued job resumed from the checkpoint"
    shown = subprocess.run(["scontrol", "show", "job", job_dir.name], capture_output=True, text=True).stdout
    assert "Restarts=" in shown and int(shown.split("Restarts=")[1].split()[0]) >= 1, shown
    assert comparable_records(run_dir) == long_run_records
