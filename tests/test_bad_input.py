"""The bad-input matrix (issue 7): every bad input is rejected with a message that names the problem
and what is valid, before any training or submission, and nothing is written to an existing run.

One table, one test. Each case is composed as `python launch.py` would compose it, on a results
root that already holds interrupted runs whose identity many bad inputs share (keys outside a
run's identity: trainer.device, trainer.cpu_threads, dataset.root, ...), so a late failure would
write into them. The test asserts the message, that no run context was built and no epoch
trained, and that not one byte under the results root changed. Cases that a sweep must catch
before submitting anything (the "prepare" stage) are also checked through `prepare`, the function
the sweep callback calls for every job.

Some of these inputs also have focused tests of their own: tests/test_config.py (compose errors,
out-of-range values, the unwritable-root probe), tests/test_data.py (missing and corrupt files of
every dataset and layout, invalid dataset options), tests/test_methods.py (a matched budget
without its reference), tests/test_models.py (model option typos). This matrix adds the
end-to-end guarantees (raised before anything runs, nothing written) and counts the cases.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from growth.errors import ConfigError
from growth.records import run_dir_for
from growth.run import prepare, run
from tests.conftest import FAST, compose_cfg
from tests.schema_matrix_eval import message  # what the user reads: the error and its causes


@dataclass(frozen=True)
class Case:
    id: str
    overrides: tuple[str, ...]
    expect: tuple[str, ...]  # fragments of the message: the problem, and what is valid
    stage: str  # compose | prepare (a sweep or study refuses before submitting) | run (before the run dir is touched)


def case(id, overrides, expect, stage="prepare"):
    return Case(id, tuple(overrides), tuple(expect), stage)


CASES = [
    # --- unknown option, unknown key, wrong type: Hydra refuses while composing
    case("unknown method option", ["method=pwmpx"], ["method/pwmpx", "Available options in 'method'", "pwmpr", "rigl"], "compose"),
    case("unknown dataset option", ["dataset=digitz"], ["dataset/digitz", "Available options in 'dataset'", "digits", "cifar10"], "compose"),
    # Hydra names the misspelt key and its schema; launch.py then adds the key meant and the valid
    # keys (test_the_command_line_names_the_key_meant_and_the_valid_keys below).
    case("unknown key", ["growth.seed_densty=0.1"], ["growth.seed_densty", "Key 'seed_densty' not in 'GrowthConfig'"], "compose"),
    # `+key=value` gets past Hydra's check: validation refuses keys no schema declares.
    case("appended unknown key", ["+growth.seed_densty=0.1"],
         ["growth.seed_densty is not a key of growth", "did you mean growth.seed_density?", "valid keys are", "'temperature'"]),
    case("unknown key in a model schema", ["model.hiden=[3]"], ["model.hiden", "Key 'hiden' not in 'MLPConfig'"], "compose"),
    case("wrong type: epochs=ten", ["trainer.epochs=ten"], ["trainer.epochs=ten", "'ten'", "could not be converted to Integer"], "compose"),
    case("wrong type: temperature=hot", ["growth.temperature=hot"], ["growth.temperature=hot", "could not be converted to Float"], "compose"),
    case("wrong type: progress=maybe", ["output.progress=maybe"], ["output.progress=maybe", "'maybe' is not a valid bool"], "compose"),
    case("unknown W&B mode", ["logger=wandb", "logger.mode=sometimes"], ["sometimes", "offline", "online", "disabled"], "compose"),
    # --- out of range
    case("seed density 0", ["growth.seed_density=0"], ["growth.seed_density=0", "a density in (0, 1]"]),
    case("seed density above 1", ["growth.seed_density=1.5"], ["growth.seed_density=1.5", "a density in (0, 1]"]),
    case("fixed density 0 (phew)", ["method=phew", "method.density=0"], ["method.density=0", "a density in (0, 1]"]),
    case("fixed density above 1 (rigl)", ["method=rigl", "method.density=1.01"], ["method.density=1.01", "a density in (0, 1]"]),
    case("growth ratio 1", ["growth.growth_ratio=1.0"], ["growth.growth_ratio=1.0", "a ratio above 1"]),
    case("growth ratio below 1", ["growth.growth_ratio=0.8"], ["growth.growth_ratio=0.8", "a ratio above 1"]),
    case("temperature 0", ["growth.temperature=0"], ["growth.temperature=0", "a temperature above 0"]),
    case("temperature negative", ["growth.temperature=-1"], ["growth.temperature=-1", "a temperature above 0"]),
    case("negative epochs", ["trainer.epochs=-3"], ["trainer.epochs=-3", "at least 1 epoch"]),
    case("negative round length", ["growth.timing.epochs=-1"], ["growth.timing.epochs=-1", "at least 1 epoch per round"]),
    case("learning rate 0", ["trainer.lr=0"], ["trainer.lr=0", "a learning rate above 0"]),
    case("learning rate negative", ["trainer.lr=-0.1"], ["trainer.lr=-0.1", "a learning rate above 0"]),
    case("round learning rate negative", ["trainer.round_lr=-1"], ["trainer.round_lr=-1", "null or a learning rate above 0"]),
    case("unknown timing mode", ["growth.timing.mode=sometimes"], ["growth.timing.mode='sometimes'", "['fixed', 'adaptive']"]),
    # Keys outside the run's identity: the existing run's directory is this config's directory.
    case("unknown device (same run dir)", ["trainer.device=tpu"], ["trainer.device='tpu'", "auto, cpu, cuda or cuda:N"]),
    case("negative CPU threads (same run dir)", ["trainer.cpu_threads=-1"], ["trainer.cpu_threads=-1", "0 (torch's default) or a thread count"]),
    # --- contradictions
    case("seed density above max density", ["growth.seed_density=0.2", "growth.max_density=0.1"],
         ["growth.seed_density=0.2 is above growth.max_density=0.1", "must not be denser"]),
    case("budget.match on a growth method", ["budget.match=pwmpr"], ["budget.match='pwmpr'", "needs a fixed-density method (grasp, masks, phew, rigl, set, shuffled_masks, snip, synflow)"]),
    case("budget.snapshot without budget.match", ["method=phew", "budget.snapshot=2"], ["budget.snapshot=2 needs budget.match"]),
    case("budget shorter than one epoch", ["method=phew", "budget.epochs=0.001"], ["budget.epochs=0.001", "at least 1 epoch (runs train whole epochs)"]),
    case("budget.match and budget.epochs", ["method=phew", "budget.match=pwmpr", "budget.epochs=3"], ["budget.match and budget.epochs are both set"]),
    case("budget.match without a reference run", ["method=phew", "budget.match=pwmpr"],
         ["budget.match='pwmpr': no finished run with method=pwmpr, dataset=digits, model=mlp, seed=0", "run it first, or set budget.reference"]),
    case("budget.reference not finished", ["method=phew", "budget.match=pwmpr", "budget.reference={digits_run}"],
         ["budget.reference=", "is not a finished run"]),
    case("model needs images, digits are vectors", ["model=convnet"],
         ["model=convnet does not fit dataset=digits (inputs of shape (64,), 10 classes)", "needs image inputs of shape (channels, height, width)"]),
    case("ViT patches do not tile MNIST", ["model=vit", "dataset=mnist", "dataset.root={mnist_good}"],
         ["model=vit does not fit dataset=mnist (inputs of shape (1, 28, 28)", "model.patch_size=8 must divide the image height and width (28x28)"]),
    case("model depth contradicts its name", ["model=resnet20", "model.depth=32", "dataset=cifar10"],
         ["model.depth=32 contradicts model.name=resnet20", "'resnet20': 20"]),
    # --- data
    case("dataset root missing", ["dataset=mnist", "dataset.root={nowhere}"],
         ["dataset mnist (MNIST): no data", "{nowhere}", "Accepted layouts", "npz: mnist.npz", "idx:", "To get it"]),
    case("dataset root of the wrong layout", ["dataset=mnist", "dataset.root={mnist_wrong_layout}"],
         ["dataset mnist (MNIST): no data", "Accepted layouts", "npz: mnist.npz", "idx: train-images-idx3-ubyte"]),
    case("layout asked for is not there", ["dataset=mnist", "dataset.format=idx", "dataset.root={mnist_good}"],
         ["no data in the idx layout(s)", "idx: train-images-idx3-ubyte"]),
    case("invalid dataset format option", ["dataset=mnist", "dataset.format=cifar_binary", "dataset.root={mnist_good}"],
         ["dataset.format='cifar_binary' is invalid", "['auto', 'npz', 'idx', 'torchvision']"]),
    case("corrupt dataset file (same run dir)", ["dataset=mnist", "dataset.root={mnist_corrupt}"],
         ["mnist.npz", "cannot be read as an .npz archive", "Expected", "To get it again"]),
    case("dataset labels out of range (same run dir)", ["dataset=mnist", "dataset.root={mnist_bad_labels}"],
         ["train labels span [10, 19], expected [0, 10)", "To get it again"]),
    # --- launch
    case("two processes asked for, one started", ["trainer.devices=2"],
         ["trainer.devices=2 x trainer.nodes=1 needs 2 processes", "hydra/launcher=slurm or local", "torchrun --nproc_per_node=2"], "run"),
    case("global batch smaller than the processes", ["trainer.devices=4", "trainer.batch_size=2"],
         ["trainer.batch_size=2 is invalid", "at least trainer.devices x trainer.nodes = 4"]),
    # --- a masks file to train (method=masks)
    case("masks file of another model's shapes", ["method=masks", "method.file={masks_of_a_wider_mlp}"],
         ["method.file=", "does not fit MLP", "shape (mask, weight) mismatch", "(100, 64), (32, 64)", "model=mlp"]),
    case("masks file that does not exist", ["method=masks", "method.file={nowhere}/masks.pt"],
         ["method.file=", "does not exist", "a masks file, or a run's snapshots/round_NNN.pt"]),
    case("masks file that is not one", ["method=masks", "method.file={a_file}"],
         ["method.file=", "cannot be read as a masks file"]),
    case("masks method without a file", ["method=masks"],
         ["method.file=None is invalid", "the path of a masks file or of a run's snapshots/round_NNN.pt"]),
    # --- contradictions and degenerate values found by a probe outside the matrix (issue 15)
    case("a non-finite ratio", ["growth.growth_ratio=inf"], ["growth.growth_ratio=inf is invalid: a ratio above 1"]),
    case("milestones beyond the schedule", ["trainer.schedule=step", "trainer.milestones=[3,10]"],
         ["trainer.milestones=[3, 10] has [10] at or beyond trainer.epochs=6", "they never apply"]),
    case("a seed density that leaves no path", ["growth.seed_density=1e-9"],
         ["growth.seed_density=1e-09 is too small for model=mlp", "a path from the input to each of the 10 outputs", "choose growth.seed_density >="]),
    case("a PHEW density that leaves no path", ["method=phew", "method.density=1e-7"], ["method.density=1e-07 is too small for model=mlp"]),
    case("a rewind epoch the training never reaches", ["method=imp_c", "method.rewind=epoch", "method.rewind_epoch=10"],
         ["method.rewind_epoch=10 is invalid: an epoch below trainer.epochs=6"]),
    case("budget.reference without budget.match", ["method=phew", "budget.reference={digits_run}"], ["budget.reference=", "needs budget.match"]),
    case("a study whose reference it does not run", ["study=compare", "study.growth_methods=[rg]"],
         ["study.reference='pwmpr' is not one of study.growth_methods=['rg']"]),
    case("a model too large to index", ["model.hidden=[100000,100000]"], ["model=mlp is too large", "2**31 - 1"]),
    # --- results root
    case("results root under a file", ["output.root={a_file}/results"], ["output.root=", "is not a directory", "choose a writable output.root"]),
]


# ------------------------------------------------------------------ the existing runs and data


class Interrupt(BaseException):
    pass


def write_mnist(path: Path, n_train=400, n_test=100, labels_offset=0) -> None:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        train_x=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        train_y=((np.arange(n_train) % 10) + labels_offset).astype(np.uint8),
        test_x=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        test_y=(np.arange(n_test) % 10).astype(np.uint8),
    )


def interrupt_run(cfg) -> Path:
    """Start a run and stop it after its first growth round, as a kill would: it stays 'running'."""
    from growth.grow import GrowthRun

    original = GrowthRun.growth_round

    def stop(self):
        if self.state["round"] == 1:
            raise Interrupt()
        return original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GrowthRun, "growth_round", stop)
        with pytest.raises(Interrupt):
            run(cfg)
    run_dir = run_dir_for(cfg)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    return run_dir


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-input")
    paths = {
        "mnist_good": base / "data" / "good",
        "mnist_corrupt": base / "data" / "corrupt",
        "mnist_bad_labels": base / "data" / "bad_labels",
        "mnist_wrong_layout": base / "data" / "wrong_layout",
        "nowhere": base / "data" / "nowhere",
        "a_file": base / "a-file",
    }
    write_mnist(paths["mnist_good"] / "mnist.npz")
    (paths["mnist_corrupt"]).mkdir(parents=True)
    (paths["mnist_corrupt"] / "mnist.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 64)  # a truncated zip
    write_mnist(paths["mnist_bad_labels"] / "mnist.npz", labels_offset=10)
    # CIFAR's binary layout where MNIST is asked for, and stray images.
    (paths["mnist_wrong_layout"] / "cifar-10-batches-bin").mkdir(parents=True)
    (paths["mnist_wrong_layout"] / "cifar-10-batches-bin" / "data_batch_1.bin").write_bytes(bytes(3073))
    (paths["mnist_wrong_layout"] / "train").mkdir()
    (paths["mnist_wrong_layout"] / "train" / "0.png").write_bytes(b"\x89PNG")
    paths["a_file"].write_text("not a directory")
    from growth.masks import save_masks
    from growth.models.mlp import MLP

    wider = MLP((64,), 10, hidden=[100, 100])
    paths["masks_of_a_wider_mlp"] = base / "wider-mlp-masks.pt"
    save_masks(paths["masks_of_a_wider_mlp"], {n: torch.ones_like(wider.get_parameter(n), dtype=torch.bool) for n in wider.growable_weights()})
    root = base / "results"
    digits_run = interrupt_run(compose_cfg([*FAST, "growth.max_rounds=3"], tmp_path=root))
    mnist_run = interrupt_run(
        compose_cfg([*FAST, "growth.max_rounds=3", "dataset=mnist", f"dataset.root={paths['mnist_good']}"], tmp_path=root)
    )
    paths["digits_run"] = digits_run
    return {"root": root, "paths": {k: str(v) for k, v in paths.items()}, "runs": (digits_run, mnist_run)}


def tree(root: Path) -> dict:
    """Every file under root with its size, modification time and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[str(p.relative_to(root))] = "dir"
    return out


# ------------------------------------------------------------------ the matrix


def test_the_matrix_has_at_least_twenty_cases():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)
    assert {c.stage for c in CASES} == {"compose", "prepare", "run"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_rejected_before_anything_runs_and_nothing_is_written(case, world, monkeypatch):
    from growth.methods import RunContext
    from growth.train import Engine

    def started(*args, **kwargs):
        raise AssertionError("a run started: the input was not rejected before training")

    monkeypatch.setattr(RunContext, "__init__", started)
    monkeypatch.setattr(Engine, "train_epoch", started)
    fill = world["paths"]
    overrides = [o.format(**fill) for o in case.overrides]
    expect = [e.format(**fill) for e in case.expect]
    root = world["root"]
    before = tree(root)

    base = [o for o in FAST if not (o.startswith("model.") and any(x.startswith("model=") for x in overrides))]
    with pytest.raises(Exception) as err:
        cfg = compose_cfg([*base, "growth.max_rounds=3", *overrides], tmp_path=root)
        if case.stage == "compose":
            pytest.fail("composed a config that must not compose")
        if case.stage == "prepare":
            # What a sweep calls for every job before submitting any.
            with pytest.raises(ConfigError) as early:
                prepare(cfg, before_submission=True)
            raise early.value
        prepare(cfg)  # passes: this input is only seen when the run starts ...
        run(cfg)  # ... and it must still stop before the run directory is touched
    text = message(err.value)
    assert not isinstance(err.value, AssertionError), text
    if case.stage != "compose":
        assert isinstance(err.value, ConfigError), f"{type(err.value).__name__}: {text}"
    for fragment in expect:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert tree(root) == before, "something was written under the results root"


def test_the_command_line_names_the_key_meant_and_the_valid_keys(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "growth.seed_densty=0.1", "method=rigl", "method.densty=0.2",
         f"output.root={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "did you mean growth.seed_density?" in proc.stderr
    assert "method.densty is not a key of method: did you mean method.density?" in proc.stderr
    assert "'drop_fraction'" in proc.stderr  # the valid keys of the method chosen (rigl)
    assert not any(tmp_path.iterdir())


def test_the_existing_runs_resume_normally_after_all_that(world):
    """The runs the matrix guarded were left intact: each resumes and finishes."""
    digits_run, mnist_run = world["runs"]
    cfg = compose_cfg([*FAST, "growth.max_rounds=3"], tmp_path=world["root"])
    assert run_dir_for(cfg) == digits_run
    assert run(cfg)["status"] == "finished"


# ------------------------------------------------------------------ a masks file of another model


def test_a_masks_file_of_another_models_shapes_is_refused_naming_the_shapes(tmp_path):
    """There is no config key that takes a masks file (runs build their masks from the seed); the
    library's loader (growth.masks.load_masks) checks a file against the model it is meant for."""
    from growth.masks import load_masks, save_masks
    from growth.models.mlp import MLP

    small, large = MLP((64,), 10, hidden=[32, 32]), MLP((64,), 10, hidden=[100, 100])
    names = large.growable_weights()
    path = tmp_path / "masks.pt"
    save_masks(path, {n: torch.ones_like(p, dtype=torch.bool) for n, p in small.named_parameters() if n in names})
    with pytest.raises(ValueError) as err:
        load_masks(path, large)
    text = str(err.value)
    assert str(path) in text and "shape (mask, weight) mismatch" in text
    assert "(32, 64), (100, 64)" in text  # the file's shape and the one the model needs
    deeper = MLP((64,), 10, hidden=[32, 32, 32])
    with pytest.raises(ValueError, match=r"missing \[.*\], unexpected \[\]"):
        load_masks(path, deeper)
    assert load_masks(path, small).keys() == set(names)


# ------------------------------------------------------------------ unsafe advice (issue 15)


def test_a_library_error_advising_to_weaken_a_safety_setting_is_never_passed_on(tmp_path):
    """torch.load refuses a pickle of a class outside its allowlist and advises weights_only=False
    (and add_safe_globals): the framework's message names the file and leaves that advice out."""
    import argparse

    from growth.errors import REMOVED, safe_text

    path = tmp_path / "not-masks.pt"
    torch.save(argparse.Namespace(a=1), path)
    with pytest.raises(Exception) as raw:
        torch.load(path, weights_only=True)
    assert "weights_only" in str(raw.value) and "False" in str(raw.value)  # torch's own text advises it
    cfg = compose_cfg([*FAST, "method=masks", f"method.file={path}"], tmp_path=tmp_path / "results")
    with pytest.raises(ConfigError) as err:
        prepare(cfg)
    text = str(err.value)
    assert str(path) in text and "cannot be read as a masks file" in text
    for advice in ("weights_only=False", "weights_only` set to `False", "add_safe_globals", "safe_globals(", "arbitrary code"):
        assert advice not in text, text
    assert REMOVED in text
    assert safe_text("a plain message.") == "a plain message."
