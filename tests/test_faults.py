"""The fault matrix (issue 7): what a run survives, each case an automated test that also says
what was lost.

1. SIGKILL at random moments (mid-epoch, mid-round, mid-checkpoint-write, anywhere): resumes to
   records equal to an uninterrupted run's, bit for bit; at most one round or one epoch redone.
2. A truncated or bit-flipped checkpoint: detected by its checksum, the previous one used, a
   warning in the log and in summary.json's `warnings`.
3. ENOSPC while writing a checkpoint or a record: status failed with the message, the last
   complete checkpoint and records stay readable, a relaunch finishes the run.
4. A non-finite loss or score: status diverged with phase, round and step; analysis lists the
   run as diverged and draws no point of it. (A sweep going on past a diverged run: tests/test_slurm.py
   test_a_diverging_run_does_not_stop_the_sweep_and_is_reported, local and SLURM launchers.)
5. Two processes on one run directory: the second refuses naming the holder; a dead holder's
   lock is taken over; simultaneous launches run the run once.
6. Eight processes finishing runs into one results root at once: nothing lost or corrupted.
7. W&B failing mid-run: training unaffected (records equal a run without W&B), local records
   complete. (W&B failing at init, or at its first call: tests/test_loggers.py.)
8. SLURM preemption in a growth round and in extensive training: tests/test_slurm.py
   test_preempted_in_a_growth_round_and_again_in_extensive_training_ends_like_an_uninterrupted_run
   (and test_preempted_job_resumes_and_ends_like_an_uninterrupted_run), real SLURM and local.
Security: a checkpoint holding a pickled code payload is refused, not executed; no code path
unpickles or evals user data. (The W&B key in no file a run writes: tests/test_loggers.py
test_offline_run_mirrors_the_records_and_never_stores_the_key.)

The kill, lock and concurrency tests fork their runs from one "zygote" process that imported
torch and the framework once (a fresh interpreter costs ~4 s here): each run is still a process
of its own, killed with a real SIGKILL. The zygote's children log trace events (epoch start/end
with phase, round and epoch; checkpoint start/end) to a file, which tells where a kill landed and
how much work the relaunch redid.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import types
from pathlib import Path

import pytest
import torch

from growth import records
from growth.errors import ConfigError
from growth.records import load_checkpoint, run_dir_for
from growth.run import run
from tests.conftest import CONF, FAST, REPO, compose_cfg
from tests.test_run import comparable_records, read_csv

# ------------------------------------------------------------------ the zygote and its children


def zygote_main() -> None:
    """Import everything once, then fork a run per request (stdin: one JSON command per line)."""
    from growth.config.store import register_configs
    from growth.methods import load_methods

    import growth.run  # noqa: F401
    import sklearn.datasets  # noqa: F401

    register_configs()
    load_methods()
    # Warm what every run does first (Hydra's plugin scan and compose, validation, the digits),
    # so that each forked run starts at once; no torch computation runs here before a fork.
    from hydra import compose, initialize_config_dir

    import growth.loggers  # noqa: F401
    from growth.data import build_dataset
    from growth.run import prepare

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        prepare(compose(config_name="config", overrides=list(FAST)))
    build_dataset(compose_cfg(FAST).dataset)
    out = sys.stdout
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        cmd = json.loads(line)
        if cmd["op"] == "fork":
            out.flush()
            pid = os.fork()
            if pid == 0:
                try:
                    _child(cmd["spec"])
                finally:
                    os._exit(4)
            reply = {"pid": pid}
        else:
            _, status = os.waitpid(int(cmd["pid"]), 0)
            reply = {"code": os.waitstatus_to_exitcode(status)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def _child(spec: dict) -> None:
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.environ.update(spec.get("env", {}))
    trace = os.open(spec["trace"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def note(event: str, **fields) -> None:
        # One write per event (O_APPEND): whole lines, even when the process is killed.
        line = json.dumps({"t": time.monotonic(), "pid": os.getpid(), "event": event, **fields})
        os.write(trace, (line + "\n").encode())

    from hydra import compose, initialize_config_dir

    from growth import records as rec
    from growth import train
    from growth.run import run as run_one

    train_epoch, save_checkpoint = train.Engine.train_epoch, rec.save_checkpoint
    delay = float(spec.get("epoch_delay", 0.0))

    def traced_epoch(self, *args, **kwargs):
        where = {k: self.context.get(k) for k in ("phase", "round", "epoch")}
        note("epoch-start", **where)
        if delay:
            time.sleep(delay)
        result = train_epoch(self, *args, **kwargs)
        note("epoch-end", **where)
        return result

    def traced_save(run_dir, state):
        note("ckpt-start")
        save_checkpoint(run_dir, state)
        note("ckpt-end")

    train.Engine.train_epoch = traced_epoch
    rec.save_checkpoint = traced_save
    if spec.get("start_at"):
        time.sleep(max(0.0, spec["start_at"] - time.monotonic()))
    note("start")
    code = 0
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=spec["overrides"])
        summary = run_one(cfg)
        note("end", status=summary.get("status"), skipped=bool(summary.get("skipped")))
    except BaseException as exc:  # noqa: BLE001 - reported to the test through the trace
        traceback.print_exc()
        note("error", error=f"{type(exc).__name__}: {exc}")
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Zygote:
    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.test_faults import zygote_main; zygote_main()"],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        self.children: set[int] = set()

    def _ask(self, cmd: dict, timeout: float) -> dict | None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return json.loads(line)

    def fork(self, spec: dict) -> int:
        pid = self._ask({"op": "fork", "spec": spec}, timeout=120)["pid"]
        self.children.add(pid)
        return pid

    def wait(self, pid: int, timeout: float = 120) -> int:
        reply = self._ask({"op": "wait", "pid": pid}, timeout)
        if reply is None:  # hung: kill it (our own child) and report the hang
            os.kill(pid, signal.SIGKILL)
            self.proc.stdout.readline()
            self.children.discard(pid)
            raise AssertionError(f"run process {pid} did not finish within {timeout} s")
        self.children.discard(pid)
        return reply["code"]

    def close(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
                self.wait(pid, timeout=30)
            except (ProcessLookupError, AssertionError):
                pass
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


def spec_for(root: Path, tag: str, overrides, **extra) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    return {
        "overrides": [f"output.root={root}", *overrides],
        "log": str(root / f"{tag}.log"),
        "trace": str(root / f"{tag}.trace"),
        **extra,
    }


def read_trace(path) -> list[dict]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def epoch_key(event: dict) -> tuple:
    return (event.get("phase"), event.get("round"), event.get("epoch"))


def wait_for(trace: Path, pid: int, found, timeout: float = 60.0) -> dict | None:
    """The first event of `pid` for which found(event), polling the trace (None when the process
    ended first)."""
    deadline, seen = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        events = [e for e in read_trace(trace) if e["pid"] == pid]
        for event in events[seen:]:
            if found(event):
                return event
            if event["event"] in ("end", "error"):
                return None
        seen = len(events)
        time.sleep(0.0005)
    raise AssertionError(f"nothing happened in {timeout} s (trace {trace})")


def tensors_equal(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    return a == b


def snapshots(run_dir: Path) -> dict:
    return {p.name: torch.load(p, map_location="cpu", weights_only=True) for p in sorted((run_dir / "snapshots").glob("*.pt"))}


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files of unfinished writes, and locks."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*") if p.is_file()) + (
        ["run.lock"] if (run_dir / "run.lock").exists() else []
    )


# ------------------------------------------------------------------ 1. SIGKILL at random moments

KILL_OVERRIDES = [*FAST, "growth.max_rounds=5", "growth.timing.epochs=2", "trainer.epochs=6"]
ROUND_EPOCHS = 2  # growth.timing.epochs above: a growth round is checkpointed every 2 epochs
KINDS = ("mid-round", "mid-epoch", "mid-checkpoint-write", "anywhere")


@pytest.fixture(scope="module")
def kill_reference(zygote, tmp_path_factory):
    """One uninterrupted run, traced: its records, its epochs in order and how long each took."""
    root = tmp_path_factory.mktemp("kill-reference")
    spec = spec_for(root, "ref", KILL_OVERRIDES)
    pid = zygote.fork(spec)
    assert zygote.wait(pid) == 0, Path(spec["log"]).read_text()
    trace = read_trace(spec["trace"])
    starts = {epoch_key(e): e["t"] for e in trace if e["event"] == "epoch-start"}
    ends = {epoch_key(e): e["t"] for e in trace if e["event"] == "epoch-end"}
    keys = [epoch_key(e) for e in trace if e["event"] == "epoch-start"]
    run_dir = next(root.glob("pwmpr-*"))
    t0 = next(e["t"] for e in trace if e["event"] == "start")
    t1 = next(e["t"] for e in trace if e["event"] == "end")
    return types.SimpleNamespace(
        run_dir=run_dir,
        records=comparable_records(run_dir),
        snapshots=snapshots(run_dir),
        keys=keys,
        duration={k: ends[k] - starts[k] for k in keys},
        checkpoints=sum(e["event"] == "ckpt-end" for e in trace),
        length=t1 - t0,
    )


def kill_and_resume(zygote, ref, root: Path, seed: int, kind: str, attempt: int = 0) -> dict:
    """Kill one run at a moment drawn from `seed`, relaunch it, check the finished records.

    mid-round / mid-epoch: a uniform moment inside a growth-round epoch / an extensive-training
    epoch drawn from the reference run (anchored at that epoch's start, so machine load does not
    move the target); mid-checkpoint-write: the fault hook (growth/records/faults.py) kills the process halfway through
    writing a drawn checkpoint; anywhere: a uniform time within the measured run length.
    """
    rng = random.Random(seed * 1000 + attempt)
    growth_keys = [k for k in ref.keys if k[0] == "growth"]
    extensive_keys = [k for k in ref.keys if k[0] != "growth"]
    env: dict[str, str] = {}
    target = delay = None
    if kind == "mid-round":
        target = rng.choice(growth_keys)
        delay = rng.uniform(0, ref.duration[target])
    elif kind == "mid-epoch":
        target = rng.choice(extensive_keys)
        delay = rng.uniform(0, ref.duration[target])
    elif kind == "mid-checkpoint-write":
        env["GROWTH_FAULT_KILL_WRITE"] = f"checkpoint.pt:{rng.randint(1, ref.checkpoints)}"
    else:
        delay = rng.uniform(0, ref.length)
    first = spec_for(root, "killed", KILL_OVERRIDES, env=env)
    pid = zygote.fork(first)
    t_kill = None
    if kind != "mid-checkpoint-write":
        if target is not None:
            anchor = wait_for(first["trace"], pid, lambda e: e["event"] == "epoch-start" and epoch_key(e) == target)
        else:
            anchor = wait_for(first["trace"], pid, lambda e: e["event"] == "start")
        assert anchor is not None, f"the run ended before the drawn moment ({kind}, seed {seed})"
        time.sleep(max(0.0, anchor["t"] + delay - time.monotonic()))
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
    code = zygote.wait(pid)
    killed = [e for e in read_trace(first["trace"]) if e["pid"] == pid]
    if code != -signal.SIGKILL:
        # `anywhere` drew a moment after the end (this run was faster than the reference): no kill.
        assert kind == "anywhere" and code == 0, (code, Path(first["log"]).read_text()[-3000:])
        return {"seed": seed, "kind": kind, "landed": "after the end (no kill): drawn again", "killed": False}
    found = list(root.glob("pwmpr-*/run.lock"))
    if found:  # (a kill during start-up may come before the run directory exists)
        assert json.loads(found[0].read_text())["pid"] == pid, "the dead process's lock is left (to be taken over)"

    # Where it landed, and the work done since the last complete checkpoint.
    last = killed[-1]
    completed = [epoch_key(e) for e in killed if e["event"] == "epoch-end"]
    ckpt_ends = [i for i, e in enumerate(killed) if e["event"] == "ckpt-end"]
    covered = sum(1 for e in killed[: ckpt_ends[-1]] if e["event"] == "epoch-end") if ckpt_ends else 0
    if last["event"] == "ckpt-start":
        landed = "mid-checkpoint-write"
    elif last["event"] == "epoch-start":
        landed = "mid-round" if last["phase"] == "growth" else "mid-epoch"
    elif last["event"] == "epoch-end" and last["phase"] == "growth" and last["epoch"] < ROUND_EPOCHS - 1:
        landed = "mid-round"
    elif last["event"] == "start":
        landed = "startup"
    else:
        landed = "between epochs (evaluation, scoring, records)"
    partial = 0.0
    if last["event"] == "epoch-start" and t_kill is not None:
        partial = min(1.0, (t_kill - last["t"]) / ref.duration[epoch_key(last)])

    second = spec_for(root, "resumed", KILL_OVERRIDES)
    pid2 = zygote.fork(second)
    assert zygote.wait(pid2) == 0, Path(second["log"]).read_text()[-3000:]
    run_dir = next(root.glob("pwmpr-*"))
    redo = [epoch_key(e) for e in read_trace(second["trace"]) if e["pid"] == pid2 and e["event"] == "epoch-start"]
    resumed_at = ref.keys.index(redo[0]) if redo else len(ref.keys)
    # The relaunch continues exactly where the last complete checkpoint left off: no epoch
    # skipped, none done twice beyond the ones since that checkpoint.
    assert redo == ref.keys[resumed_at:], (redo, ref.keys)
    assert covered <= resumed_at <= len(completed), (covered, resumed_at, len(completed))
    assert completed == ref.keys[: len(completed)]
    lost = len(completed) - resumed_at + partial
    # At most one round (growth: checkpointed every round) or one epoch (extensive training).
    bound = ROUND_EPOCHS if resumed_at < len(ref.keys) and ref.keys[resumed_at][0] == "growth" else 1
    assert lost <= bound + 1e-9, (lost, bound)

    assert comparable_records(run_dir) == ref.records, f"records differ after a kill ({kind}, seed {seed})"
    assert tensors_equal(snapshots(run_dir), ref.snapshots)
    assert json.loads((run_dir / "summary.json").read_text())["warnings"] == []
    assert leftovers(run_dir) == [], "temporary files and the lock are cleaned up"
    return {
        "seed": seed, "kind": kind, "landed": landed, "killed": True, "survived": True,
        "last_event": [last["event"], *epoch_key(last)], "resumed_at_epoch": resumed_at,
        "epochs_lost": round(lost, 3), "bound": bound,
    }


def kill_matrix(zygote, ref, tmp_path: Path, n: int, record_property) -> dict:
    started = time.monotonic()
    rows = []
    for s in range(n):
        for attempt in range(4):  # `anywhere` may draw a moment after a (faster) run's end: draw again
            rows.append(kill_and_resume(zygote, ref, tmp_path / f"kill{s:02d}-{attempt}", s, KINDS[s % len(KINDS)], attempt))
            if rows[-1]["killed"]:
                break
    kills = [r for r in rows if r["killed"]]
    report = {
        "kills_tried": len(kills),
        "kills_survived": sum(r["survived"] for r in kills),
        "moments_drawn_again": len(rows) - len(kills),
        "landed": {k: sum(r["landed"] == k for r in kills) for k in sorted({r["landed"] for r in kills})},
        "epochs_lost_max": max(r["epochs_lost"] for r in kills),
        "epochs_lost_mean": round(sum(r["epochs_lost"] for r in kills) / len(kills), 3),
        "run_epochs": len(ref.keys),
        "run_seconds": round(ref.length, 2),
        "test_seconds": round(time.monotonic() - started, 1),
        "kills": rows,
    }
    print("\nSIGKILL report: " + json.dumps({k: v for k, v in report.items() if k != "kills"}))
    for r in rows:
        print("  " + json.dumps(r))
    (tmp_path / "kill_report.json").write_text(json.dumps(report, indent=2))
    record_property("sigkill_report", json.dumps({k: v for k, v in report.items() if k != "kills"}))
    assert report["kills_survived"] == report["kills_tried"]
    return report


def test_sigkill_once_of_each_kind_resumes_to_identical_records(zygote, kill_reference, tmp_path, record_property):
    report = kill_matrix(zygote, kill_reference, tmp_path, len(KINDS), record_property)
    assert report["kills_tried"] == len(KINDS)
    assert report["landed"].get("mid-checkpoint-write", 0) >= 1


@pytest.mark.slow
def test_sigkill_at_twenty_random_moments_resumes_to_identical_records(zygote, kill_reference, tmp_path, record_property):
    report = kill_matrix(zygote, kill_reference, tmp_path, 20, record_property)
    assert report["kills_tried"] == 20
    for kind in ("mid-round", "mid-epoch", "mid-checkpoint-write"):
        assert report["landed"].get(kind, 0) >= 2, report["landed"]
    assert report["epochs_lost_max"] <= ROUND_EPOCHS


# ------------------------------------------------------------------ 2. damaged checkpoints

DAMAGE_OVERRIDES = ("growth.max_rounds=5", "trainer.epochs=3")


class Interrupt(BaseException):
    """Stops a run in-process the way a kill would: nothing after it runs (no summary update)."""


def interrupted_run(cfg, monkeypatch, at_round: int) -> Path:
    from growth.grow import GrowthRun

    original = GrowthRun.growth_round

    def stop(self):
        if self.state["round"] == at_round:
            raise Interrupt()
        return original(self)

    monkeypatch.setattr(GrowthRun, "growth_round", stop)
    with pytest.raises(Interrupt):
        run(cfg)
    monkeypatch.setattr(GrowthRun, "growth_round", original)
    run_dir = run_dir_for(cfg)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    return run_dir


def without_warnings(recs):
    rounds, curve, summary, masks, weights = recs
    return rounds, curve, {k: v for k, v in summary.items() if k != "warnings"}, masks, weights


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


HEADER = len(b"GROWTHCKPT1\n") + 65

DAMAGE = {
    "truncated": lambda d: (d / "checkpoint.pt").write_bytes((d / "checkpoint.pt").read_bytes()[:5000]),
    "payload-byte-flipped": lambda d: flip(d / "checkpoint.pt", HEADER + 3000),
    "checksum-byte-flipped": lambda d: flip(d / "checkpoint.pt", HEADER - 10),
    "emptied": lambda d: (d / "checkpoint.pt").write_bytes(b""),
    "both-damaged": lambda d: (flip(d / "checkpoint.pt", HEADER + 100), flip(d / "checkpoint.prev.pt", HEADER + 100)),
}


@pytest.fixture(scope="module")
def damage_reference(tmp_path_factory):
    cfg = compose_cfg([*FAST, *DAMAGE_OVERRIDES], tmp_path=tmp_path_factory.mktemp("damage-ref"))
    assert run(cfg)["status"] == "finished"
    return comparable_records(run_dir_for(cfg))


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_detected_reported_and_the_previous_one_used(
    damage, damage_reference, make_cfg, monkeypatch, caplog
):
    cfg = make_cfg(*DAMAGE_OVERRIDES)
    run_dir = interrupted_run(cfg, monkeypatch, at_round=3)
    newest = load_checkpoint(run_dir)["state"]["round"]
    previous = records._read_checkpoint(run_dir / "checkpoint.prev.pt")["state"]["round"]
    assert (newest, previous) == (3, 2)
    DAMAGE[damage](run_dir)
    both = damage == "both-damaged"

    # Never a silent load: the damaged file is skipped with a warning naming it and the reason.
    with pytest.warns(UserWarning) as caught:
        found = load_checkpoint(run_dir)
    assert [str(w.message).split(" is unusable")[0] for w in caught] == [
        f"checkpoint {run_dir / name}" for name in ("checkpoint.pt", "checkpoint.prev.pt")[: 2 if both else 1]
    ]
    assert found is None if both else found["state"]["round"] == previous

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="growth.records"), pytest.warns(UserWarning):
        summary = run(cfg)
    assert summary["status"] == "finished"
    logged = [r.getMessage() for r in caplog.records if "is unusable" in r.getMessage()]
    recorded = json.loads((run_dir / "summary.json").read_text())["warnings"]
    assert len(logged) == len(recorded) == (2 if both else 1)
    assert logged == recorded
    assert str(run_dir / "checkpoint.pt") in recorded[0]
    reason = "bad header" if damage == "emptied" else "checksum mismatch"
    assert reason in recorded[0]
    assert recorded[-1].endswith("no intact checkpoint is left: the run starts over" if both else "resumed from checkpoint.prev.pt instead")
    # One round redone from the previous checkpoint (or the run redone from scratch) gives the
    # very same records as a run never damaged.
    assert without_warnings(comparable_records(run_dir)) == without_warnings(damage_reference)


# ------------------------------------------------------------------ 3. no space left on device


def full_disk(monkeypatch, target: str, nth: int, persistent: bool) -> dict:
    """fsync of the nth atomic write of `target` (and, if persistent, of every write after it)
    fails with ENOSPC, as on a full disk; the temporary file was written up to then."""
    real = os.fsync
    state = {"count": 0, "full": False, "failures": 0}

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(f".{target}.") and name.endswith(".tmp"):
            state["count"] += 1
            if state["count"] == nth:
                state["full"] = True
        if state["full"] and name.endswith(".tmp") and (persistent or state["failures"] == 0):
            state["failures"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return state


ENOSPC_OVERRIDES = ("growth.max_rounds=4", "trainer.epochs=3")


@pytest.fixture(scope="module")
def enospc_reference(tmp_path_factory):
    cfg = compose_cfg([*FAST, *ENOSPC_OVERRIDES], tmp_path=tmp_path_factory.mktemp("enospc-ref"))
    assert run(cfg)["status"] == "finished"
    return comparable_records(run_dir_for(cfg))


@pytest.mark.parametrize("persistent", [False, True], ids=["disk-full-once", "disk-stays-full"])
@pytest.mark.parametrize("target, nth", [("checkpoint.pt", 3), ("rounds.csv", 2), ("summary.json", 3), ("round_002.pt", 1)])
def test_no_space_left_stops_the_run_clearly_and_keeps_the_last_records_readable(
    target, nth, persistent, enospc_reference, make_cfg, monkeypatch, caplog
):
    cfg = make_cfg(*ENOSPC_OVERRIDES)
    run_dir = run_dir_for(cfg)
    state = full_disk(monkeypatch, target, nth, persistent)
    with caplog.at_level(logging.ERROR, logger="growth"), pytest.raises(OSError) as err:
        run(cfg)
    assert state["failures"] >= 1
    assert err.value.errno == errno.ENOSPC and target in str(err.value), str(err.value)
    summary = json.loads((run_dir / "summary.json").read_text())  # always a whole, parseable file
    if persistent:
        # Nothing can be written any more: the last complete summary stays, the log says why.
        assert summary["status"] == "running"
        assert any("could not write" in r.getMessage() and "No space left" in r.getMessage() for r in caplog.records)
    else:
        assert summary["status"] == "failed"
        assert summary["error"].startswith("no space left on device") and target in summary["error"]
    assert any("no space left on device" in r.getMessage() for r in caplog.records)
    ckpt = load_checkpoint(run_dir)  # the last complete checkpoint, intact (no warning)
    assert ckpt is not None and ckpt["state"]["phase"] == "growth"
    read_csv(run_dir / "rounds.csv")
    assert not [p for p in run_dir.rglob(".*.tmp")], "no half-written temporary file is left"
    assert not (run_dir / "run.lock").exists()
    # Space freed: the relaunch resumes and ends exactly like a run that never met a full disk.
    monkeypatch.undo()
    assert run(cfg)["status"] == "finished"
    assert comparable_records(run_dir) == enospc_reference


# ------------------------------------------------------------------ 4. non-finite loss


def test_a_diverged_seed_says_where_and_analysis_never_draws_it(make_cfg, monkeypatch, tmp_path):
    """Seed 1 of a variant diverges in round 1 (its weights turn NaN, so the loss does); seed 0
    finishes. The diverged seed must not enter the variant's curve, mean or band."""
    from analysis.load import load_table
    from analysis.plots import curve_points, plot_accuracy_cost, plot_cost_density, plot_performance_density
    from analysis.report import _status_section
    from growth.train import Engine

    original = Engine.train_epoch

    def poisoned(self, optimizer):
        if self.context.get("phase") == "growth" and self.context.get("round") == 1:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return original(self, optimizer)

    monkeypatch.setattr(Engine, "train_epoch", poisoned)
    diverging = make_cfg("extensive.which=all", "seed=1")
    assert run(diverging)["status"] == "diverged"
    monkeypatch.undo()
    fine = make_cfg("extensive.which=all")
    assert run(fine)["status"] == "finished"
    div_dir = run_dir_for(diverging)
    on_disk = json.loads((div_dir / "summary.json").read_text())
    assert on_disk["status"] == "diverged" and "non-finite training loss" in on_disk["error"]
    round0 = read_csv(div_dir / "rounds.csv")
    assert len(round0) == 1  # round 0 was recorded (and checkpointed) before round 1 diverged
    assert on_disk["where"] == {"phase": "growth", "round": 1, "epoch": 0, "step": int(round0[0]["batches"])}
    assert load_checkpoint(div_dir)["state"]["round"] == 1, "its last good checkpoint is kept"

    table = load_table(tmp_path / "results")
    rows = table[table["run_dir"] == str(div_dir)]
    assert len(rows) == 1 and rows.iloc[0]["status"] == "diverged" and rows.iloc[0]["phase"] == "run"
    assert rows.iloc[0]["test_accuracy"] != rows.iloc[0]["test_accuracy"]  # NaN: no accuracy
    assert table["variant"].nunique() == 1, "the two seeds are one variant"
    points = curve_points(table)
    fin_dir = str(run_dir_for(fine))
    assert set(points["run_dir"]) == {fin_dir} and len(points) == 5
    # What is drawn is exactly the finished seed's points: the diverged seed is neither a point,
    # nor part of a mean or a band.
    curve = read_csv(run_dir_for(fine) / "curve.csv")
    perf = plot_performance_density(table)
    line = next(ln for ln in perf.axes[0].get_lines() if ln.get_gid() == "pwmpr|")
    assert list(line.get_xdata()) == pytest.approx([float(c["density"]) for c in curve])
    assert list(line.get_ydata()) == pytest.approx([100 * float(c["test_accuracy"]) for c in curve])
    for fig in (perf, plot_cost_density(table), plot_accuracy_cost(table)):
        for ax in fig.axes:
            for ln in ax.get_lines():
                assert len(ln.get_xdata()) <= len(curve)
            for coll in ax.collections:  # bands and scatter points
                for path in coll.get_paths():
                    assert len(path.vertices) == 0 or not any(v != v for v in path.vertices.ravel())
    section = _status_section(table)
    assert "diverged" in section and str(div_dir) in section


def test_a_non_finite_score_is_diverged_with_round_and_step(make_cfg, monkeypatch):
    """Weights blown up to 1e120 after round 1's training: the PWMP path sums overflow float64
    in the real scoring code, and the run says in which round, after how many steps, and where."""
    from growth.grow import GrowthRun

    original = GrowthRun.grow

    def blow_up(self, n_new):
        if self.state["round"] == 1:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.mul_(1e120)
        return original(self, n_new)

    monkeypatch.setattr(GrowthRun, "grow", blow_up)
    cfg = make_cfg()
    assert run(cfg)["status"] == "diverged"
    run_dir = run_dir_for(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "non-finite PWMP scores" in summary["error"]
    (round0,) = read_csv(run_dir / "rounds.csv")  # round 1 diverged before it was recorded
    # after round 1's training: two rounds of one epoch each, the same number of batches
    assert summary["where"] == {
        "phase": "growth", "round": 1, "epoch": 0, "step": 2 * int(round0["batches"]), "layers": summary["where"]["layers"],
    }
    assert summary["where"]["layers"] and load_checkpoint(run_dir)["state"]["round"] == 1


# ------------------------------------------------------------------ 5. two processes, one run directory

LOCK_OVERRIDES = [*FAST, "growth.max_rounds=3", "trainer.epochs=3"]


def test_a_second_process_refuses_naming_the_holder(zygote, tmp_path):
    holder_spec = spec_for(tmp_path, "holder", LOCK_OVERRIDES, epoch_delay=0.1)
    holder = zygote.fork(holder_spec)
    assert wait_for(holder_spec["trace"], holder, lambda e: e["event"] == "epoch-start") is not None
    run_dir = next(tmp_path.glob("pwmpr-*"))
    config_stamp = (run_dir / "config.yaml").stat().st_mtime_ns
    second_spec = spec_for(tmp_path, "second", LOCK_OVERRIDES)
    second = zygote.fork(second_spec)
    assert zygote.wait(second) == 3
    error = next(e for e in read_trace(second_spec["trace"]) if e["event"] == "error")["error"]
    assert f"run directory {run_dir} is in use by another process (pid {holder} on host {socket.gethostname()}" in error
    assert "delete" in error and "run.lock" in error
    assert not [e for e in read_trace(second_spec["trace"]) if e["event"].startswith("epoch")], "it never trained"
    assert (run_dir / "config.yaml").stat().st_mtime_ns == config_stamp, "it wrote nothing"
    assert zygote.wait(holder) == 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert not (run_dir / "run.lock").exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(zygote, tmp_path):
    spec = spec_for(tmp_path, "killed", LOCK_OVERRIDES)
    pid = zygote.fork(spec)
    assert wait_for(spec["trace"], pid, lambda e: e["event"] == "ckpt-end") is not None
    os.kill(pid, signal.SIGKILL)
    assert zygote.wait(pid) == -signal.SIGKILL
    run_dir = next(tmp_path.glob("pwmpr-*"))
    assert json.loads((run_dir / "run.lock").read_text())["pid"] == pid  # the dead holder's lock
    (run_dir / ".checkpoint.pt.abandoned.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves
    again = spec_for(tmp_path, "again", LOCK_OVERRIDES)
    pid2 = zygote.fork(again)
    assert zygote.wait(pid2) == 0, Path(again["log"]).read_text()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert f"took over {run_dir / 'run.lock'}" in Path(again["log"]).read_text()
    assert leftovers(run_dir) == []


def lock_text(pid, host=None, job=None, process="unset") -> str:
    info = {"pid": pid, "host": host or socket.gethostname(), "slurm_job_id": job}
    if process != "unset":
        info["process"] = process
    return json.dumps(info)


@pytest.mark.parametrize(
    "holder, taken_over",
    [
        ("dead pid", True),
        ("live pid, reused by another process", True),
        ("unreadable lock", True),
        ("our own SLURM job, requeued", True),
        ("live process", False),
        ("live process, lock of an older version (no process identity)", False),
        ("another host", False),
    ],
)
def test_run_lock_decides_from_the_holder(holder, taken_over, tmp_path, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = os.getpid()
    text = {
        "dead pid": lock_text(dead.pid),
        "live pid, reused by another process": lock_text(me, process="another-boot:12345"),
        "unreadable lock": "{\"pid\": 12",
        "our own SLURM job, requeued": lock_text(me, job="4242", process=records._process_identity(me)),
        "live process": lock_text(me, process=records._process_identity(me)),
        "live process, lock of an older version (no process identity)": lock_text(me),
        "another host": lock_text(dead.pid, host="elsewhere.example"),
    }[holder]
    monkeypatch.setenv("SLURM_JOB_ID", "4242") if "SLURM" in holder else monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    (tmp_path / "run.lock").write_text(text)
    lock = records.RunLock(tmp_path)
    if taken_over:
        lock.acquire()
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == me
        lock.release()
        assert not (tmp_path / "run.lock").exists()
    else:
        with pytest.raises(RuntimeError, match="is in use by another process") as err:
            lock.acquire()
        assert "host" in str(err.value) and str(json.loads(text)["pid"]) in str(err.value)
        assert (tmp_path / "run.lock").read_text() == text, "a live holder's lock is left alone"
    assert not list(tmp_path.glob(".run.lock.*")), "no claim file is left behind"


def test_claims_left_by_processes_killed_while_taking_the_lock_are_cleaned_up(tmp_path):
    """A kill between writing the claim and removing it leaves .run.lock.<host>.<pid>.claim (or a
    moved-aside .stale): the next holder removes a dead process's, never a live one's."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    left = [tmp_path / f".run.lock.{host}.{dead.pid}.claim", tmp_path / f".run.lock.{host}.{dead.pid}.stale"]
    alive = tmp_path / f".run.lock.{host}.{os.getppid()}.claim"
    elsewhere = tmp_path / f".run.lock.elsewhere.example.{dead.pid}.claim"
    for path in [*left, alive, elsewhere]:
        path.write_text("{}")
    with records.RunLock(tmp_path):
        pass
    assert not any(p.exists() for p in left)
    assert alive.exists() and elsewhere.exists(), "a live process's claim, or another host's, is left alone"


def test_simultaneous_launches_on_one_run_dir_run_it_once(zygote, tmp_path):
    # A stale lock is there too: every process finds it, one takes it over, the rest refuse.
    cfg = compose_cfg(LOCK_OVERRIDES, tmp_path=tmp_path)
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / "run.lock").write_text(lock_text(dead.pid))
    start_at = time.monotonic() + 1.5
    specs = [spec_for(tmp_path, f"p{i}", LOCK_OVERRIDES, start_at=start_at, epoch_delay=0.05) for i in range(6)]
    pids = [zygote.fork(s) for s in specs]
    codes = [zygote.wait(p) for p in pids]
    outcomes = []
    trained = set()
    for pid, spec, code in zip(pids, specs, codes):
        events = [e for e in read_trace(spec["trace"]) if e["pid"] == pid]
        trained |= {pid for e in events if e["event"] == "epoch-start"}
        end = events[-1]
        if end["event"] == "end" and not end["skipped"]:
            outcomes.append("ran")
        elif end["event"] == "end":
            outcomes.append("skipped: already finished")
        else:
            assert "is in use by another process" in end["error"], end
            outcomes.append("refused")
    print(f"\n{len(pids)} simultaneous launches on one run directory (stale lock present): {sorted(outcomes)}")
    assert outcomes.count("ran") == 1 and len(trained) == 1, outcomes
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert leftovers(run_dir) == []


# ------------------------------------------------------------------ 6. many writers, one results root

WRITERS = 8
WRITER_OVERRIDES = [*FAST, "growth.max_rounds=3", "trainer.epochs=3", "extensive.which=all"]


def test_eight_processes_finishing_at_once_lose_and_corrupt_nothing(zygote, tmp_path):
    from analysis.load import load_table

    shared, alone = tmp_path / "shared", tmp_path / "alone"
    start_at = time.monotonic() + 2.0
    specs = [spec_for(shared, f"w{i}", [*WRITER_OVERRIDES, f"seed={i}"], start_at=start_at) for i in range(WRITERS)]
    pids = [zygote.fork(s) for s in specs]

    # A reader hammers the records while they are written: every file it finds must parse.
    stop, reads, bad = threading.Event(), [0], []

    def reader():
        while not stop.is_set():
            for path in shared.glob("*/*"):
                try:
                    if path.suffix == ".json":
                        json.loads(path.read_text())
                    elif path.suffix == ".csv":
                        read_csv(path)
                    else:
                        continue
                    reads[0] += 1
                except FileNotFoundError:
                    pass
                except Exception as exc:  # noqa: BLE001
                    bad.append(f"{path}: {exc}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        codes = [zygote.wait(p) for p in pids]
    finally:
        stop.set()
        thread.join()
    assert codes == [0] * WRITERS, [Path(s["log"]).read_text()[-2000:] for s, c in zip(specs, codes) if c]
    assert bad == [] and reads[0] > 0
    ends = [max(e["t"] for e in read_trace(s["trace"])) for s in specs]
    print(f"\n{WRITERS} writers: {reads[0]} reads while writing, all parsed; finished within {max(ends) - min(ends):.2f} s of each other")

    dirs = sorted(p for p in shared.glob("pwmpr-*") if p.is_dir())
    assert len(dirs) == WRITERS
    for d in dirs:
        assert json.loads((d / "summary.json").read_text())["status"] == "finished"
        assert leftovers(d) == []
    table = load_table(shared)
    assert sorted(table["seed"].unique()) == list(range(WRITERS))
    assert (table.groupby("seed")["phase"].apply(lambda p: (p == "extensive").sum()) == 3).all()
    # The same runs, one at a time: identical records.
    for i in range(WRITERS):
        spec = spec_for(alone, f"a{i}", [*WRITER_OVERRIDES, f"seed={i}"])
        assert zygote.wait(zygote.fork(spec)) == 0
    for d in dirs:
        assert comparable_records(d) == comparable_records(alone / d.name)


# ------------------------------------------------------------------ 7. W&B failing mid-run


class _FlakyWandbRun:
    """A W&B run that works for `ok` log calls, then fails as when the service goes away."""

    def __init__(self, ok: int):
        self.ok, self.calls, self.summary = ok, 0, {}

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, data, step=None):
        self.calls += 1
        if self.calls > self.ok:
            raise ConnectionError("W&B unreachable")

    def finish(self, exit_code=0):
        raise AssertionError("finish must not be called on a logger that has failed")


def test_wandb_failing_mid_run_leaves_training_and_records_untouched(make_cfg, monkeypatch, caplog, tmp_path):
    flaky = _FlakyWandbRun(ok=5)
    fake = types.SimpleNamespace(init=lambda **kw: flaky, Settings=lambda **kw: None, Table=None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with caplog.at_level(logging.WARNING, logger="growth.loggers"):
        summary = run(make_cfg("logger=wandb", "growth.max_rounds=4", "extensive.which=all"))
    assert summary["status"] == "finished"
    assert flaky.calls == 6, "W&B worked for a while, then failed once and was left alone"
    warnings = [r for r in caplog.records if "W&B logging is off" in r.getMessage()]
    assert len(warnings) == 1 and "W&B unreachable" in warnings[0].getMessage()
    plain = compose_cfg([*FAST, "growth.max_rounds=4", "extensive.which=all"], tmp_path=tmp_path / "plain")
    assert run(plain)["status"] == "finished"
    assert comparable_records(Path(summary["run_dir"])) == comparable_records(run_dir_for(plain))


# ------------------------------------------------------------------ security


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def checkpoint_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    return b"GROWTHCKPT1\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def test_a_checkpoint_with_a_code_payload_is_refused_and_never_executed(make_cfg, tmp_path):
    marker = tmp_path / "payload-ran"
    _Payload(marker).__reduce__()[0]  # the payload is real: calling it would create the marker
    evil = checkpoint_bytes({"state": _Payload(marker), "model": {}})
    cfg = make_cfg("growth.max_rounds=2", "trainer.epochs=2")
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(evil)  # a valid checksum: weights_only must refuse it
    with pytest.warns(UserWarning, match="unusable"):
        assert load_checkpoint(run_dir) is None
    assert not marker.exists()
    with pytest.warns(UserWarning, match="unusable"):
        summary = run(cfg)
    assert summary["status"] == "finished" and not marker.exists()
    recorded = json.loads((run_dir / "summary.json").read_text())["warnings"]
    assert len(recorded) == 1 and "Weights only load failed" in recorded[0]
    # The same payload as a masks file or a snapshot is refused too.
    from growth.masks import load_masks

    evil_masks = tmp_path / "masks.pt"
    torch.save({"w": _Payload(marker)}, evil_masks)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_masks(evil_masks)
    assert not marker.exists()
    # ... and as the file a masks run is asked to train, before anything is written
    masks_cfg = make_cfg("method=masks", f"method.file={evil_masks}")
    with pytest.raises(ConfigError, match="cannot be read as a masks file: .*Weights only load failed"):
        run(masks_cfg)
    assert not marker.exists() and not run_dir_for(masks_cfg).exists()


def test_no_code_path_unpickles_or_evaluates_user_data():
    """Static check: every torch.load is weights_only=True; no eval/exec, no bare pickle.load
    (the CIFAR pickles go through a restricted unpickler: tests/test_data.py)."""
    import re

    sources = [REPO / "launch.py", *(REPO / d for d in ("growth", "baselines", "analysis")) ]
    files = [p for s in sources for p in ([s] if s.is_file() else s.rglob("*.py"))]
    assert len(files) > 20
    for path in files:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 1, match.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            call = text[match.start() : end]
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), path
        assert not re.search(r"pickle\.loads?\(", text), path
        assert "yaml.load(" not in text and "yaml.unsafe_load" not in text, path
