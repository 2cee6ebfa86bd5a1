"""Run one configured job: validate, find its run directory, skip or resume, run the method,
and always leave a summary whose status says how it ended."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from growth import distributed, records
from growth.config.validation import validate
from growth.data import build_dataset, check_dataset
from growth.errors import ConfigError, DivergedError
from growth.kinds import METHODS
from growth.methods import RunContext
from growth.train import resolve_device

log = logging.getLogger("growth")


def check_writable(run_dir: Path, root_key: str) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{root_key}: cannot create or write the run directory {run_dir} ({exc.strerror or exc}); "
            "choose a writable output.root (or set GROWTH_RESULTS)"
        ) from None


def prepare(cfg: DictConfig, before_submission: bool = False) -> tuple[Path, type]:
    """Everything that can be checked before training: raises ConfigError, writes nothing.

    before_submission (a sweep's or study's check of its jobs): also read the dataset's files
    once, so a corrupt one stops the launch instead of failing every job it submitted."""
    validate(cfg)
    method_cls = METHODS.get(cfg.method.name)
    check_dataset(cfg.dataset, read=before_submission)  # before any run directory exists
    run_dir = records.run_dir_for(cfg)
    summary = records.read_summary(run_dir)
    precheck = getattr(method_cls, "precheck", None)
    if precheck is not None and not (summary and summary.get("status") in records.TERMINAL_STATUSES):
        precheck(cfg)  # e.g. a matched budget's reference run must exist (a finished run is skipped)
    return run_dir, method_cls


def run(cfg: DictConfig) -> dict:
    run_dir, method_cls = prepare(cfg)
    summary = records.read_summary(run_dir)
    if summary and summary.get("status") in records.TERMINAL_STATUSES:
        log.info("run %s already %s: skipped", run_dir, summary["status"])
        return {**summary, "skipped": True, "run_dir": str(run_dir)}
    shard = distributed.setup(cfg.trainer, resolve_device(cfg.trainer.device))
    data = build_dataset(cfg.dataset)  # read (a corrupt file is a ConfigError) before the run directory is touched
    with _owned(run_dir, cfg, shard):
        ctx = RunContext(cfg, run_dir, data=data)
        status = "failed"
        method = None
        try:
            method = method_cls(ctx)
            summary = method.run()
            status = summary["status"]
        except DivergedError as exc:
            status = "diverged"
            # Where the engine was (phase, round, epoch, steps so far), refined by the error's own
            # (a loss: the first bad step; a score: the layers).
            engine = getattr(method, "engine", None)
            where = {**(engine.context if engine else {}), **({"step": engine.step} if engine else {}), **exc.where}
            return _finish_abnormally(run_dir, cfg, "diverged", str(exc), where)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                _finish_abnormally(run_dir, cfg, "failed", f"no space left on device: {exc}", {})
            raise
        except Exception as exc:
            _finish_abnormally(run_dir, cfg, "failed", f"{type(exc).__name__}: {exc}", {"traceback": traceback.format_exc()})
            raise
        finally:
            ctx.logger.finish(status)
    summary["run_dir"] = str(run_dir)
    return summary


@contextlib.contextmanager
def _owned(run_dir: Path, cfg: DictConfig, shard: distributed.Shard):
    """Rank 0 checks the directory, takes the run's lock and writes its config; the other ranks
    of a data-parallel run wait for that and fail with the same message if it failed."""
    lock = records.RunLock(run_dir)
    problem: Exception | None = None
    if shard.is_writer:
        try:
            check_writable(run_dir, "output.root")
            lock.acquire()
            records.atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        except (ConfigError, RuntimeError, OSError) as exc:
            lock.release()
            problem = exc
    message = distributed.broadcast_object(None if problem is None else f"{type(problem).__name__}: {problem}")
    if problem is not None:
        raise problem
    if message is not None:
        raise RuntimeError(f"rank 0 could not start the run: {message}")
    try:
        yield
    finally:
        lock.release()


def _finish_abnormally(run_dir: Path, cfg: DictConfig, status: str, message: str, where: dict) -> dict:
    previous = records.read_summary(run_dir) or {}
    summary = {
        **previous,
        **records.run_fields(cfg),
        "status": status,
        "error": message,
        "where": where,
        "run_dir": str(run_dir),
    }
    try:
        records.atomic_write_json(run_dir / "summary.json", summary)
    except OSError as exc:  # e.g. the disk is full: the last complete summary stays readable
        log.error("could not write %s: %s", run_dir / "summary.json", exc)
    log.error("run %s %s: %s", run_dir, status, message)
    return summary
