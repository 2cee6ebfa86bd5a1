"""logger=wandb: real offline W&B run files from real small runs, the stored run id and resume,
failures that must not touch training, and no API key in anything a run writes."""

import csv
import json
import logging
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from growth.loggers import WANDB_ID_FILE, RunLogger, WandbLogger, build_logger, derive_wandb_id, flat_config
from growth.loggers.wandb_files import parse_offline_run as parse_wandb_folder
from growth.loggers.wandb_files import read_wandb_records
from growth.run import run
from tests.conftest import REPO

FAKE_KEY = "fakekey" + "0123456789abcdef" * 2 + "0"  # 40 characters, the shape of a W&B key


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """Keep W&B's own config, cache and data folders inside the test's tmp dir."""
    home = tmp_path / "wandb_home"
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                     ("WANDB_ARTIFACT_DIR", "artifacts")):
        (home / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(home / sub))
    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    return home


# ------------------------------------------------------------------ reading W&B's offline files

def parse_offline_run(run_path: Path, timeout: float = 30.0) -> dict:
    """The run's records once W&B's service has written them: `finish()` returns before the
    service has flushed its log to disk, so wait for the exit record."""
    (log_file,) = run_path.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in read_wandb_records(log_file)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return parse_wandb_folder(run_path)


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


# ------------------------------------------------------------------ config


def test_wandb_logger_config_composes_with_defaults_and_rejects_a_bad_mode(make_cfg):
    cfg = make_cfg("logger=wandb")
    assert cfg.logger.name == "wandb"
    assert cfg.logger.mode.value == "offline"
    assert cfg.logger.project == "growth-density" and cfg.logger.entity is None and cfg.logger.group is None
    assert cfg.logger.job_type is None and list(cfg.logger.tags) == [] and cfg.logger.dir is None
    assert make_cfg("logger=wandb", "logger.mode=disabled").logger.mode.value == "disabled"
    with pytest.raises((ConfigCompositionException, ValidationError)):
        make_cfg("logger=wandb", "logger.mode=onlin")
    with pytest.raises((ConfigCompositionException, ValidationError)):
        make_cfg("logger=wandb", "logger.api_key=x")  # no place for a key in the config


def test_flat_config_has_dotted_keys_and_the_filter_keys(make_cfg):
    flat = flat_config(make_cfg("logger=wandb", "method=phew", "method.density=0.2", "seed=3"))
    assert flat["method"] == "phew" and flat["density"] == 0.2 and flat["seed"] == 3
    assert flat["dataset"] == "digits" and flat["model"] == "mlp"
    assert flat["growth.timing.epochs"] == 1 and flat["trainer.lr"] == 0.05 and flat["logger.mode"] == "offline"
    assert not any(isinstance(v, dict) and v for v in flat.values())


def test_wandb_id_is_derived_from_the_run_directory_and_the_stored_one_wins(tmp_path):
    a, b = tmp_path / "x" / "pwmpr-digits-mlp-s0-abc", tmp_path / "y" / "pwmpr-digits-mlp-s0-abc"
    ida, idb = derive_wandb_id(a), derive_wandb_id(b)
    assert ida.startswith("pwmpr-digits-mlp-s0-abc-") and ida != idb  # same name, other results root
    assert ida == derive_wandb_id(a)
    odd = derive_wandb_id(tmp_path / "run:1;a,b#c?d'e")
    assert not set(":;,#?/'") & set(odd) and odd.startswith("run-1-a-b-c-d-e-")  # W&B's reserved characters
    from growth.loggers import wandb_run_id

    a.mkdir(parents=True)
    assert wandb_run_id(a) == ida and (a / WANDB_ID_FILE).read_text().strip() == ida
    (a / WANDB_ID_FILE).write_text("moved-run-id\n")
    assert wandb_run_id(a) == "moved-run-id"


# ------------------------------------------------------------------ failures never reach training


def test_logger_none_and_a_missing_wandb_package(make_cfg, monkeypatch, caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    assert type(build_logger(make_cfg(), tmp_path)) is RunLogger
    with caplog.at_level(logging.WARNING, logger="growth.loggers"):
        logger = build_logger(make_cfg("logger=wandb"), tmp_path)
        logger.log_round({"density": 0.1})
        logger.finish("finished")
    assert isinstance(logger, WandbLogger) and logger.failed
    warnings = [r for r in caplog.records if "W&B logging is off" in r.getMessage()]
    assert len(warnings) == 1 and "needs the wandb package" in warnings[0].getMessage()


def test_wandb_init_failure_leaves_a_complete_run_and_one_warning(make_cfg, monkeypatch, caplog, wandb_home):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("W&B service unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING, logger="growth.loggers"):
        summary = run(make_cfg("logger=wandb", "growth.max_rounds=3", "extensive.which=all"))
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "finished"
    assert len(read_csv(run_dir / "rounds.csv")) == 3 and len(read_csv(run_dir / "curve.csv")) == 3
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    warnings = [r for r in caplog.records if "W&B logging is off" in r.getMessage()]
    assert len(warnings) == 1 and "W&B service unreachable" in warnings[0].getMessage()
    assert not (run_dir / "wandb").exists()


class _FullDiskRun:
    """Stands in for a wandb Run whose every log call fails as with a full disk."""

    def __init__(self):
        self.summary, self.calls = {}, 0

    def define_metric(self, *a, **k):
        pass

    def log(self, data, step=None):
        self.calls += 1
        raise OSError(28, "No space left on device")

    def finish(self, exit_code=0):
        raise AssertionError("finish must not be called on a logger that has failed")


def test_a_log_error_mid_run_turns_the_logger_off_after_one_warning(make_cfg, monkeypatch, caplog):
    fake_run = _FullDiskRun()
    fake = types.SimpleNamespace(init=lambda **kw: fake_run, Settings=lambda **kw: None, Table=None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with caplog.at_level(logging.WARNING, logger="growth.loggers"):
        summary = run(make_cfg("logger=wandb", "growth.max_rounds=3"))
    assert summary["status"] == "finished"
    assert fake_run.calls == 1  # the first failure switched it off: no further W&B calls
    warnings = [r for r in caplog.records if "W&B logging is off" in r.getMessage()]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    assert len(read_csv(Path(summary["run_dir"]) / "rounds.csv")) == 3


def test_disabled_in_the_environment_writes_no_wandb_files(make_cfg, monkeypatch, wandb_home):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    summary = run(make_cfg("logger=wandb", "growth.max_rounds=2"))
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "finished"
    assert not (run_dir / "wandb").exists() and not (run_dir / WANDB_ID_FILE).exists()


# ------------------------------------------------------------------ real offline runs


def test_offline_run_mirrors_the_records_and_never_stores_the_key(make_cfg, monkeypatch, wandb_home, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    cfg = make_cfg("logger=wandb", "logger.group=study-x", "logger.tags=[digits,smoke]", "growth.max_rounds=4",
                   "extensive.which=all", "trainer.epochs=3")
    summary = run(cfg)
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "finished"
    (offline,) = offline_runs(run_dir)
    stored_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    assert offline.name.endswith("-" + stored_id)
    w = parse_offline_run(offline)
    assert w["run"].run_id == stored_id and w["run"].project == "growth-density"
    assert w["run"].run_group == "study-x" and w["run"].job_type == "pwmpr" and list(w["run"].tags) == ["digits", "smoke"]
    assert w["run"].display_name == run_dir.name
    # the resolved config, flattened
    assert w["config"]["method.name"] == "pwmpr" and w["config"]["growth.timing.epochs"] == 1
    assert w["config"]["seed"] == 0 and w["config"]["run_dir"] == str(run_dir) and w["config"]["trainer.epochs"] == 3
    # one history row per growth round, the same numbers as rounds.csv
    rounds = read_csv(run_dir / "rounds.csv")
    grown = [h for h in w["history"] if "growth/density" in h]
    assert [h["growth/density"] for h in grown] == pytest.approx([float(r["density"]) for r in rounds])
    assert [h["growth/proxy_accuracy"] for h in grown] == pytest.approx([float(r["proxy_accuracy"]) for r in rounds])
    assert [h["growth/cost_epochs"] for h in grown] == pytest.approx([float(r["cost_epochs"]) for r in rounds])
    layer_keys = [k for k in grown[0] if k.startswith("growth/layer_density/")]
    assert len(layer_keys) == 3 and "growth/fit_valid" in grown[-1] and grown[-1]["growth/stop"] == 1
    # density is the x-axis of the growth metrics
    steps = {m.glob_name or m.name: m.step_metric for m in w["metrics"]}
    assert steps.get("growth/*") == "growth/density"
    # epochs of fixed training, phase in the key: 4 snapshots x 3 epochs
    epochs = [h for h in w["history"] if any(k.endswith("/loss") and k.startswith("extensive_") for k in h)]
    assert len(epochs) == 12 and {h["extensive_2/epoch"] for h in epochs if "extensive_2/epoch" in h} == {1, 2, 3}
    # the curve as a table file and as curve/* rows
    curve = read_csv(run_dir / "curve.csv")
    assert [h["curve/test_accuracy"] for h in w["history"] if "curve/density" in h] == pytest.approx(
        [float(c["test_accuracy"]) for c in curve])
    table_path = offline / "files" / w["summary"]["performance_density"]["path"]
    table = json.loads(table_path.read_text())
    assert len(table["data"]) == 4 and "test_accuracy" in table["columns"]
    # the summary mirrors summary.json
    local = json.loads((run_dir / "summary.json").read_text())
    assert w["summary"]["status"] == "finished" and w["exit_code"] == 0
    assert w["summary"]["discovered_density"] == pytest.approx(local["discovered_density"])
    assert w["summary"]["test_accuracy"] == pytest.approx(local["test_accuracy"])
    assert w["summary"]["cost"]["epochs"] == pytest.approx(local["cost"]["epochs"])
    # the key from the environment is in no file the run (or W&B beside it) wrote
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), f"API key found in {path}"


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_wandb_run(make_cfg, monkeypatch, wandb_home):
    from growth.grow import GrowthRun

    cfg = make_cfg("logger=wandb", "growth.max_rounds=3", "trainer.epochs=3")
    original = GrowthRun.train_snapshot

    def interrupted(self, r):
        raise RuntimeError("node preempted")

    monkeypatch.setattr(GrowthRun, "train_snapshot", interrupted)
    with pytest.raises(RuntimeError, match="preempted"):
        run(cfg)
    monkeypatch.setattr(GrowthRun, "train_snapshot", original)
    summary = run(cfg)  # resumes from the checkpoint after the growth rounds
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "finished"
    first, second = (parse_offline_run(p) for p in offline_runs(run_dir))
    stored_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    assert first["run"].run_id == second["run"].run_id == stored_id
    assert first["exit_code"] == 1 and first["summary"]["status"] == "failed" and "preempted" in first["summary"]["error"]
    assert second["exit_code"] == 0 and second["summary"]["status"] == "finished"
    assert len([h for h in first["history"] if "growth/density" in h]) == 3
    assert not [h for h in second["history"] if "growth/density" in h]  # rounds were not redone
    assert [h["extensive_2/epoch"] for h in second["history"] if "extensive_2/epoch" in h] == [1, 2, 3]
    # explicit steps: the resumed part continues the history where the first stopped
    assert_one_history(first, second)
    # W&B's own CLI sees both parts as runs to upload (no upload happens: --dry-run)
    out = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", *map(str, offline_runs(run_dir))],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Would sync 2 run(s)" in text, text


def steps(part: dict) -> list[int]:
    return [int(h["_step"]) for h in part["history"]]


def assert_one_history(*parts: dict) -> None:
    """Every step once over the attempts, in order, with no gap: one history in pieces."""
    together = [s for p in parts for s in steps(p)]
    assert together == list(range(len(together))), together


@pytest.mark.slow
def test_a_run_killed_between_a_log_and_its_checkpoint_writes_no_step_twice_and_rebuilds_as_one(
        make_cfg, monkeypatch, wandb_home):
    """The work after the last checkpoint is redone on resume; its rows, already written by the
    first attempt, are not written again. The rebuild joins the attempts into one offline run."""
    from growth.loggers.wandb_files import main as rebuild_main
    from growth.methods import MethodRun

    cfg = make_cfg("logger=wandb", "growth.max_rounds=3", "trainer.epochs=3")
    original, killed = MethodRun.checkpoint, []

    def dies_after_the_second_extensive_epoch(self):
        progress = self.state["progress"].get("extensive:2", {})
        if progress.get("epoch") == 2 and not killed:  # its row is written, its checkpoint not
            killed.append(True)
            raise RuntimeError("node preempted")
        original(self)

    monkeypatch.setattr(MethodRun, "checkpoint", dies_after_the_second_extensive_epoch)
    with pytest.raises(RuntimeError, match="preempted"):
        run(cfg)
    monkeypatch.setattr(MethodRun, "checkpoint", original)
    summary = run(cfg)
    run_dir = Path(summary["run_dir"])
    first, second = (parse_offline_run(p) for p in offline_runs(run_dir))
    assert_one_history(first, second)
    epochs = [(h["_step"], h["extensive_2/epoch"]) for p in (first, second) for h in p["history"] if "extensive_2/epoch" in h]
    assert [e for _, e in epochs] == [1, 2, 3]  # epoch 2, redone after the kill, is there once
    assert [h["extensive_2/epoch"] for h in first["history"] if "extensive_2/epoch" in h] == [1, 2]

    assert rebuild_main([str(run_dir)]) == 0
    (rebuilt,) = (run_dir / "wandb_rebuilt" / "wandb").glob("offline-run-*")
    whole = parse_offline_run(rebuilt)
    assert whole["run"].run_id == first["run"].run_id and whole["exit_code"] == 0
    assert steps(whole) == steps(first) + steps(second)
    (table_row,) = [h for h in whole["history"] if "performance_density" in h]
    table = json.loads((rebuilt / "files" / table_row["performance_density"]["path"]).read_text())
    assert len(table["data"]) == len(read_csv(run_dir / "curve.csv")) and "test_accuracy" in table["columns"]
    originals = {int(h["_step"]): h for p in (first, second) for h in p["history"]}
    for h in whole["history"]:
        old = originals[int(h["_step"])]
        plain = lambda row: {k: v for k, v in row.items() if not k.startswith("_") and not isinstance(v, dict)}
        assert plain(h) == plain(old) and ("performance_density" in h) == ("performance_density" in old)
    assert whole["summary"]["status"] == "finished" and whole["summary"]["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    out = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(rebuilt)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0 and "Would sync 1 run(s)" in out.stdout + out.stderr
    # not a W&B run: one line, exit 2
    bad = subprocess.run([sys.executable, "-m", "growth.loggers.wandb_files", str(run_dir / "snapshots")], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
