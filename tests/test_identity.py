"""Run identity: a run directory is named by the settings that differ from their schema defaults,
so a new key with a default renames nothing; runs named by the earlier rule are migrated."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from growth.config import TrainerConfig
from growth.records import read_summary, run_dir_for, run_name
from growth.records.identity import legacy_identity
from tests.conftest import FAST, REPO, compose_cfg

# Pinned: these names change only when a schema default (or a recipe's yaml) changes, on purpose.
PINNED = {
    (): "pwmpr-digits-mlp-s0-a852bda0a3",
    ("seed=1",): "pwmpr-digits-mlp-s1-1f15cdd89f",
    ("method=rigl", "method.density=0.05"): "rigl-digits-mlp-s0-e47492de90",
    ("method=imp_c",): "imp_c-digits-mlp-s0-1b68857902",
    ("experiment=mnist_lenet300",): "pwmpr-mnist-lenet300-s0-ad2cbbea12",
    ("method=phew", "budget.match=pwmpr", "budget.snapshot=3", "budget.reference=/r/x"): "phew-digits-mlp-s0-7d2db58729",
    ("method=gg", "growth.timing.epochs=1"): "gg-digits-mlp-s0-edba36969a",
    # Where results go, logging, devices and threads never change what a run computes.
    ("trainer.device=cpu", "trainer.cpu_threads=2", "output.root=/elsewhere", "logger=wandb"): "pwmpr-digits-mlp-s0-a852bda0a3",
    # The paper's form (METHOD's rule and proxy) keeps the name the embedded default had before
    # noise_tol and the annealed proxy became the default.
    ("growth/stop=logistic", "growth.proxy.anneal_epochs=0"): "pwmpr-digits-mlp-s0-88113cd418",
    # A baseline reads no growth section: growth's defaults or settings never rename it.
    ("method=imp_c", "growth/stop=logistic", "growth.proxy.anneal_epochs=0", "growth.stop.tol=0.03"): "imp_c-digits-mlp-s0-1b68857902",
}


@pytest.mark.parametrize("overrides", list(PINNED), ids=lambda o: " ".join(o) or "default")
def test_pinned_run_names(overrides, tmp_path):
    assert run_name(compose_cfg(list(overrides), tmp_path)) == PINNED[overrides]


def test_a_setting_given_at_its_default_value_is_the_same_run(tmp_path):
    assert run_name(compose_cfg(["growth.growth_ratio=1.25", "trainer.epochs=100"], tmp_path)) == PINNED[()]
    assert run_name(compose_cfg(["growth.growth_ratio=1.3"], tmp_path)) != PINNED[()]


@dataclass
class TrainerWithNewKey(TrainerConfig):
    # A key a later version adds, defaulting to what the framework did without it.
    label_smoothing: float = 0.0


@pytest.fixture
def new_trainer_key():
    store = ConfigStore.instance()
    store.store(group="trainer", name="trainer_schema", node=TrainerWithNewKey)
    yield
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)


def test_a_new_key_with_a_default_keeps_finished_runs_and_matched_references(tmp_path, request):
    from growth.run import run

    small = [*FAST, "trainer.epochs=2", "growth.max_rounds=3"]
    reference = run(compose_cfg([*small, "method=pwmpr"], tmp_path))
    request.getfixturevalue("new_trainer_key")
    cfg = compose_cfg([*small, "method=pwmpr"], tmp_path)
    assert "label_smoothing" in cfg.trainer  # the upgraded schema is the one composed
    assert run_dir_for(cfg) == Path(reference["run_dir"])
    again = run(cfg)
    assert again.get("skipped") is True
    matched = run(compose_cfg([*small, "method=phew", "budget.match=pwmpr", "budget.snapshot=1",
                               f"budget.reference={reference['run_dir']}"], tmp_path))
    assert matched["status"] == "finished" and matched["budget"]["reference"] == reference["run_dir"]
    # and setting the new key to something else is a new run
    assert run_dir_for(compose_cfg([*small, "method=pwmpr", "trainer.label_smoothing=0.1"], tmp_path)) != run_dir_for(cfg)


def _as_legacy(run_dir, reference_map=None):
    """Rename a run directory to the name the earlier rule gave it (as a run from before the upgrade)."""
    config_path = run_dir / "config.yaml"
    container = OmegaConf.to_container(OmegaConf.load(config_path))
    if reference_map and container["budget"]["reference"] in reference_map:
        container["budget"]["reference"] = reference_map[container["budget"]["reference"]]
        config_path.write_text(OmegaConf.to_yaml(container))
    stem = run_dir.name.rpartition("-")[0]
    legacy = run_dir.parent / f"{stem}-{legacy_identity(container)}"
    run_dir.rename(legacy)
    return legacy


def migrate(root, *flags):
    return subprocess.run([sys.executable, "-m", "growth.migrate", str(root), *flags], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_migration_renames_runs_of_the_earlier_naming(tmp_path):
    from growth.run import run

    small = [*FAST, "trainer.epochs=2", "growth.max_rounds=3"]
    ref = run(compose_cfg([*small, "method=pwmpr"], tmp_path))
    matched = run(compose_cfg([*small, "method=phew", "budget.match=pwmpr", "budget.snapshot=1",
                               f"budget.reference={ref['run_dir']}"], tmp_path))
    current = {ref["run_dir"], matched["run_dir"]}
    import pathlib

    legacy_ref = _as_legacy(pathlib.Path(ref["run_dir"]))
    legacy_matched = _as_legacy(pathlib.Path(matched["run_dir"]), {ref["run_dir"]: str(legacy_ref)})
    assert {str(p) for p in tmp_path.glob("*-s0-*")} == {str(legacy_ref), str(legacy_matched)}

    said = migrate(tmp_path)
    assert said.returncode == 0, said.stderr
    assert f"would rename {legacy_ref.name} -> {pathlib.Path(ref['run_dir']).name}" in said.stdout
    assert legacy_ref.exists() and legacy_matched.exists()  # nothing renamed without --apply

    done = migrate(tmp_path, "--apply")
    assert done.returncode == 0, done.stderr
    assert "2 run directories renamed" in done.stdout
    assert {str(p) for p in tmp_path.glob("*-s0-*")} == current
    # A relaunch finds both finished; the matched run's reference follows the rename.
    assert run(compose_cfg([*small, "method=pwmpr"], tmp_path)).get("skipped") is True
    again = run(compose_cfg([*small, "method=phew", "budget.match=pwmpr", "budget.snapshot=1",
                             f"budget.reference={ref['run_dir']}"], tmp_path))
    assert again.get("skipped") is True
    assert read_summary(matched["run_dir"])["status"] == "finished"
    assert migrate(tmp_path).stdout.strip().endswith("0 run directories to rename (run again with --apply)")


@pytest.mark.slow
def test_the_migration_refuses_on_a_conflict_and_renames_nothing(tmp_path):
    import pathlib

    from growth.run import run

    ref = run(compose_cfg([*FAST, "trainer.epochs=2", "growth.max_rounds=3"], tmp_path))
    legacy = _as_legacy(pathlib.Path(ref["run_dir"]))
    pathlib.Path(ref["run_dir"]).mkdir()  # something already has the new name
    said = migrate(tmp_path, "--apply")
    assert said.returncode == 2
    assert f"{legacy.name} would become {pathlib.Path(ref['run_dir']).name}, which exists already: nothing renamed" in said.stderr
    assert legacy.exists()


def test_the_migration_renames_a_run_named_by_an_earlier_current_rule(tmp_path):
    """A baseline named when the growth sections were still part of its identity (any
    `<method>-<dataset>-<model>-s<seed>-<hash>` that is not its current name) is renamed; a
    directory of another name (output.run_dir) is left alone."""
    from omegaconf import OmegaConf

    from growth.migrate import plan

    cfg = compose_cfg(["method=imp_c"], tmp_path)
    old = tmp_path / "imp_c-digits-mlp-s0-8a6cad237f"
    mine = tmp_path / "my-own-run"
    for d in (old, mine):
        d.mkdir()
        (d / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (rename,) = plan(tmp_path)
    assert rename.old == old and rename.new.name == PINNED[("method=imp_c",)]
