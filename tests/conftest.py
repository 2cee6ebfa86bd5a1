import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from growth.config.store import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
register_configs()

# Small, fast settings for end-to-end runs on the embedded default.
FAST = [
    "trainer.epochs=6",
    "growth.timing.epochs=1",
    "growth.max_rounds=5",
    "growth.stop.rule=none",
    # (the embedded default's annealed proxy adds an epoch to every round; tests of it say so)
    "growth.proxy.anneal_epochs=0",
    "model.hidden=[32,32]",
    "output.progress=false",
]


def compose_cfg(overrides=(), tmp_path=None):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        extra = [f"output.root={tmp_path}"] if tmp_path is not None else []
        return compose(config_name="config", overrides=[*extra, *overrides])


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides, fast=True):
        return compose_cfg([*(FAST if fast else []), *overrides], tmp_path=tmp_path / "results")

    return make


def shared_data_dir() -> Path | None:
    """../shared/data beside the repository; loud in CI when missing."""
    path = REPO.parent / "shared" / "data"
    if path.is_dir():
        return path
    if os.environ.get("CI"):
        raise RuntimeError(f"CI is set but the shared datasets are missing at {path}")
    return None


# Set by pytest itself, or by a library for the rest of the process: W&B's dependencies on import,
# W&B's service (for child processes to reuse), torch inductor on import. Left as they are.
_SET_BY_LIBRARIES = {
    "PYTEST_CURRENT_TEST", "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK", "WANDB_SERVICE",
    "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR",
}


@pytest.fixture(autouse=True)
def environment_unchanged():
    """A test that changes os.environ (outside monkeypatch) changes what later tests' configs and
    subprocesses see (GROWTH_SLURM_* resolve into configs): it fails, and the environment is put back."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k) and k not in _SET_BY_LIBRARIES)
    if changed:
        for key in changed:
            if key in before:
                os.environ[key] = before[key]
            else:
                del os.environ[key]
        pytest.fail(f"the test left os.environ changed: {changed}")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the slow end-to-end tests (CI does)")


def pytest_collection_modifyitems(config, items):
    # Slow tests are deselected (not skipped) without --slow, so a skip never reads as a pass.
    if config.getoption("--slow"):
        return
    kept = [item for item in items if "slow" not in item.keywords]
    deselected = [item for item in items if "slow" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


SMALL_STUDY = ["study=compare", "study.seeds=[0]", *FAST, "growth.max_rounds=4", "study.max_density=0.02",
               "study.method_overrides.imp_c=['method.min_density=0.5']"]


def launch_small_study(root: Path):
    import subprocess
    import sys

    args = [sys.executable, str(REPO / "launch.py"), *SMALL_STUDY, f"output.root={root}"]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """The comparison study at tiny settings, run once for every test that reads it:
    (results root, the launch's completed process)."""
    root = tmp_path_factory.mktemp("small-study")
    done = launch_small_study(root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root, done

