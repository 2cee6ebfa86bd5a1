"""study.pack=k: a study's runs k to a SLURM job, each a process of it with the records, resume and
skip it has alone (growth.study.pack). The SLURM tests need the local cluster
(scripts/slurm_local.sh); in CI a missing one fails loudly."""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from growth.records import run_dir_for
from growth.study.pack import member_threads
from growth.study.plan import STUDY_EXECUTION_KEYS, study_identity, user_overrides
from tests.conftest import FAST, compose_cfg
from tests.test_run import comparable_records
from tests.test_slurm import launch, launch_in_background, require_slurm, wait_for_round

STUDY = ["study=compare", "study.seeds=[0]", *FAST, "growth.max_rounds=3", "study.max_density=0.02", "study.matched_methods=[phew]",
         "study.baselines=[dense]", "study.growth_methods=[pwmpr]", "trainer.epochs=8", "study.executor=slurm"]


def queued(job_ids) -> set[str]:
    """Those of these jobs SLURM still holds (pending or running)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    return set(map(str, job_ids)) & set(out)


def wait_until_gone(job_ids, timeout=600) -> None:
    deadline = time.time() + timeout
    while queued(job_ids):
        if time.time() > deadline:
            pytest.fail(f"SLURM jobs {sorted(queued(job_ids))} still queued after {timeout} s")
        time.sleep(2)


def read_study(root: Path) -> dict:
    (study_file,) = (root / "studies").glob("compare-*/study.json")
    return json.loads(study_file.read_text())


def elsewhere(overrides) -> list[str]:
    """The overrides less output.root: a run composed from them goes where compose_cfg puts it."""
    return [o for o in overrides if not o.startswith("output.root=")]


def summary_of(run_dir) -> dict:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_pack_is_how_a_study_runs_not_what_it_computes():
    """A packed study finds the directory of the same study unpacked (pack=1 is today's)."""
    assert "pack" in STUDY_EXECUTION_KEYS
    one = compose_cfg(STUDY)
    two = compose_cfg([*STUDY, "study.pack=3"])
    assert one.study.pack == 1 and two.study.pack == 3
    assert study_identity(one.study, user_overrides(STUDY)) == study_identity(two.study, user_overrides([*STUDY, "study.pack=3"]))
    # The members split the job's CPUs; never below one thread.
    assert [member_threads(8, k) for k in (1, 2, 3, 16)] == [8, 4, 2, 1]


def test_locally_pack_means_workers():
    from growth.study import StudyPlan

    def plan(*overrides):
        return StudyPlan(compose_cfg([*STUDY, *overrides]), compose_cfg, [])

    assert plan("study.executor=local", "study.pack=3").local_processes() == 3
    assert plan("study.executor=local", "study.pack=2", "study.workers=4").local_processes() == 4
    assert plan("study.pack=3").local_processes() == 1, "on SLURM the job runs the members, not this process"
    assert plan("study.executor=local", "study.pack=3").job_config(plan().stage1()[0]).output.progress is False


def test_pack_below_one_is_refused():
    proc = launch([*STUDY, "study.pack=0", "dry_run=true"])
    assert proc.returncode != 0 and "study.pack" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_packed_study_on_slurm_runs_every_run_as_alone_in_fewer_jobs(tmp_path):
    require_slurm()
    proc = launch([*STUDY, "study.pack=2", f"output.root={tmp_path}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = read_study(tmp_path)
    jobs = {j["label"]: j for j in study["jobs"]}
    ids = {j["job_id"] for j in study["jobs"]}
    assert None not in ids and len(ids) < len(jobs), f"{len(jobs)} runs in {len(ids)} SLURM jobs"
    assert len(ids) == -(-len(jobs) // 2), "two runs a job, stage by stage"
    ref = jobs["pwmpr/s0"]
    matched = [j for j in study["jobs"] if j["label"].startswith("phew/")]
    assert all(j["job_id"] != ref["job_id"] for j in matched), "stage-2 runs are not packed with their reference"
    # Right after submission the matched jobs are held by their dependency on the reference's job.
    held = subprocess.run(["squeue", "-h", "-o", "%i %r", "-j", ",".join({j["job_id"] for j in matched})], capture_output=True, text=True).stdout
    assert summary_of(ref["run_dir"]).get("status") == "finished" or "Dependency" in held, held
    wait_until_gone(ids)
    # Each run directory is the one the run has alone, named by its own config.
    for job in study["jobs"]:
        alone = run_dir_for(compose_cfg([*study["overrides"], *job["overrides"]]))
        assert Path(job["run_dir"]) == alone, job["label"]
        assert summary_of(job["run_dir"]).get("status") == "finished", (job["label"], summary_of(job["run_dir"]))
    ref_end = (Path(ref["run_dir"]) / "summary.json").stat().st_mtime
    for j in matched:
        assert (Path(j["run_dir"]) / "config.yaml").stat().st_mtime >= ref_end - 1, "a matched run started before its reference ended"
    assert sum(0 if summary_of(j["run_dir"]).get("not_applicable") else 1 for j in matched) == 3, "one matched run per reference round"
    # The reference's records are those of the same run alone (same thread count: one CPU split in two).
    from growth.run import run

    alone = compose_cfg([*elsewhere(study["overrides"]), *ref["overrides"], "trainer.cpu_threads=1"], tmp_path=tmp_path / "alone")
    run(alone)
    assert comparable_records(Path(ref["run_dir"])) == comparable_records(run_dir_for(alone))
    # Relaunched, the study submits nothing new.
    again = launch([*STUDY, "study.pack=2", f"output.root={tmp_path}"])
    assert "submitted 0 SLURM jobs" in again.stdout, again.stdout


@pytest.mark.slow
def test_a_member_that_dies_leaves_the_other_finished_and_is_recorded_failed(tmp_path):
    """The growth run's process is killed at its first rounds.csv write (a fault the dense run,
    which writes none, never meets); the dense member of the same job finishes."""
    require_slurm()
    proc = launch([*STUDY, "study.pack=2", "study.matched_methods=[]", f"output.root={tmp_path}"],
                  env_extra={"GROWTH_FAULT_KILL_WRITE": "rounds.csv:1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = read_study(tmp_path)
    jobs = {j["label"]: j for j in study["jobs"]}
    assert set(jobs) == {"dense/s0", "pwmpr/s0"} and jobs["dense/s0"]["job_id"] == jobs["pwmpr/s0"]["job_id"]
    wait_until_gone([jobs["dense/s0"]["job_id"]])
    assert summary_of(jobs["dense/s0"]["run_dir"])["status"] == "finished"
    dead = summary_of(jobs["pwmpr/s0"]["run_dir"])
    assert dead["status"] == "failed" and "signal 9" in dead["error"], dead
    # The job says a member failed; the study's wait reports each member from its records.
    log = "\n".join(p.read_text() for p in (tmp_path / "slurm").glob(f"{jobs['dense/s0']['job_id']}_*log.*"))
    assert "packed members did not finish: pwmpr/s0: failed" in log, log[-3000:]
    waited = launch([*STUDY, "study.pack=2", "study.matched_methods=[]", "study.wait=true", "study.poll_seconds=1",
                     f"output.root={tmp_path}"])
    # Relaunched without the fault, the failed member is resubmitted alone and finishes.
    assert "submitted 1 SLURM jobs" in waited.stdout and "pwmpr/s0: finished" in waited.stdout, waited.stdout[-3000:]
    assert summary_of(jobs["pwmpr/s0"]["run_dir"])["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("interruption", ["preempted", "cancelled"])
def test_an_interrupted_packed_job_resumes_its_members_from_their_checkpoints(interruption, tmp_path):
    """preempted: SLURM's time-limit signal (USR2, through submitit's test hook) requeues the same
    job; cancelled: scancel ends it and the relaunched study submits what did not finish."""
    import submitit

    from growth.records import load_checkpoint
    from growth.run import run

    require_slurm()
    # 150 epochs for each snapshot's training (a few seconds in all): long enough that the
    # interruption lands mid-run; the dense pack-mate stays short
    long = [*STUDY, "study.pack=2", "study.matched_methods=[]", "growth.max_rounds=6", "growth.timing.epochs=3",
            "trainer.epochs=150", "study.method_overrides.dense=['trainer.epochs=2']", "output.progress=true",
            f"output.root={tmp_path}"]
    proc = launch(long)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = {j["label"]: j for j in read_study(tmp_path)["jobs"]}
    first = jobs["pwmpr/s0"]["job_id"]
    assert jobs["dense/s0"]["job_id"] == first
    run_dir = Path(jobs["pwmpr/s0"]["run_dir"])
    deadline = time.time() + 300
    while True:
        ckpt = load_checkpoint(run_dir) if (run_dir / "checkpoint.pt").exists() else None
        if ckpt is not None and ckpt["state"]["round"] >= 2:
            break
        assert time.time() < deadline and queued([first]), "the packed job never reached round 2"
        time.sleep(0.05)
    if interruption == "preempted":
        submitit.SlurmJob(folder=tmp_path / "slurm", job_id=first)._interrupt(timeout=True)
        wait_until_gone([first])
        second = first  # requeued: the same job, started again
    else:
        # SIGKILL at once: a plain scancel sends SIGTERM, which submitit's jobs log and outlive for
        # KillWait (10 s on the test cluster), long enough for these tiny runs to finish.
        subprocess.run(["scancel", "--full", "--signal=KILL", first], check=True)
        wait_until_gone([first])
        assert summary_of(run_dir)["status"] == "running", "killed mid-way"
        again = launch([*long, "study.wait=true", "study.poll_seconds=1"])
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        second = {j["label"]: j for j in read_study(tmp_path)["jobs"]}["pwmpr/s0"]["job_id"]
        assert second not in (None, first)
    for label in ("dense/s0", "pwmpr/s0"):
        assert summary_of(jobs[label]["run_dir"])["status"] == "finished", label
    log = "\n".join(p.read_text() for p in (tmp_path / "slurm").glob(f"{second}_*log.*"))
    assert f"resuming {run_dir}" in log, "the job went on with the growth run from its checkpoint"
    # ...and it ended with the records of the same run never interrupted.
    alone = compose_cfg([*elsewhere(user_overrides(long)), *jobs["pwmpr/s0"]["overrides"], "trainer.cpu_threads=1"],
                        tmp_path=tmp_path / "alone")
    run(alone)
    assert comparable_records(run_dir) == comparable_records(run_dir_for(alone))


def test_packed_sweep_refuses_a_bad_pack_and_a_data_parallel_run(tmp_path):
    for value, said in (("0", "hydra.launcher.pack=0 is invalid: sweep jobs a SLURM job runs at once, from 1 to 256"),
                        ("300", "hydra.launcher.pack=300 is invalid")):
        proc = launch(["-m", "seed=0,1", "hydra/launcher=slurm_packed", f"hydra.launcher.pack={value}", f"output.root={tmp_path}", *FAST])
        assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    proc = launch(["-m", "seed=0,1", "hydra/launcher=slurm_packed", "trainer.devices=2", f"output.root={tmp_path}", *FAST])
    assert proc.returncode == 2 and "is a data-parallel run: use hydra/launcher=slurm" in proc.stderr, proc.stderr[-2000:]
    dry = launch(["-m", "seed=0,1,2", "hydra/launcher=slurm_packed", "hydra.launcher.pack=2", "dry_run=true", f"output.root={tmp_path}", *FAST])
    assert dry.returncode == 0 and "3 jobs would be launched in 2 SLURM jobs of up to 2" in dry.stdout, dry.stdout[-2000:]
    assert not list(tmp_path.rglob("summary.json"))


@pytest.mark.slow
def test_packed_sweep_on_slurm_resumes_a_preempted_member_and_ends_as_alone(tmp_path):
    """hydra/launcher=slurm_packed: three sweep jobs in two SLURM jobs; the first job, preempted
    (SLURM's warning, USR2) at its member's round 2, is requeued and its members resume; every
    run ends with the records it has alone, and the sweep relaunched runs nothing again."""
    import submitit

    from growth.run import run

    require_slurm()
    long = [*FAST, "growth.max_rounds=6", "growth.timing.epochs=3", "trainer.epochs=150", "output.progress=true"]
    root = tmp_path / "sweep"
    sweep = ["-m", "seed=0,1,2", "hydra/launcher=slurm_packed", "hydra.launcher.pack=2", f"output.root={root}", *long]
    first = launch_in_background(sweep)  # SLURM_ENV: one CPU a job, so each member one thread, as the runs alone
    run_dir = run_dir_for(compose_cfg([*long, "seed=0"], tmp_path=root))
    wait_for_round(run_dir, first)
    # The sweep's SLURM jobs: one array of two tasks, each with its folder (submitit's %j: <array>_<task>).
    jobs = sorted(p.name for p in (root / "slurm").iterdir() if p.is_dir() and re.fullmatch(r"\d+_\d+", p.name))
    assert len(jobs) == 2, jobs  # 3 sweep jobs, 2 to a SLURM job
    submitit.SlurmJob(folder=root / "slurm" / "%j", job_id=jobs[0])._interrupt(timeout=True)
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    assert "sweep report: 3 finished" in out, out[-3000:]
    log = "\n".join(p.read_text() for p in (root / "slurm" / jobs[0]).glob("*_log.*"))
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log and f"resuming {run_dir}" in log, log[-3000:]
    for seed in (0, 2):  # a member of the preempted job, and the one alone in its job
        alone = compose_cfg([*long, f"seed={seed}", "trainer.cpu_threads=1"], tmp_path=tmp_path / "alone")
        run(alone)
        packed = run_dir_for(compose_cfg([*long, f"seed={seed}"], tmp_path=root))
        assert comparable_records(packed) == comparable_records(run_dir_for(alone)), seed
    again = launch(sweep)
    assert again.returncode == 0 and "sweep report: 3 finished" in again.stdout, again.stdout[-3000:]
    later = [p for p in (root / "slurm").iterdir() if p.is_dir() and re.fullmatch(r"\d+_\d+", p.name) and p.name not in jobs]
    assert len(later) == 2
    logs = "\n".join(p.read_text() for job in later for p in job.glob("*_log.out"))
    assert logs.count("[already finished: skipped]") == 3, logs[-3000:]
