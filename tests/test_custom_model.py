"""model=custom: any nn.Module by import path. Torchvision's ResNet-18 and SqueezeNet 1.1 (which the
tracer follows) and MobileNet-V3-small (depthwise convolutions, which it does not) at 32x32 with
10 classes, a small model defined here, the growable override, and every bad input refused before
anything runs."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from growth.config.validation import validate
from growth.cost import CostLedger, forward_flops_per_sample
from growth.data import build_dataset
from growth.errors import ConfigError
from growth.masks import count_active, count_total, growable_weight_names
from growth.models import build_model
from growth.models.custom import GrowableWeights
from growth.records import run_dir_for
from growth.run import run
from growth.scores import pwmp_scores
from growth.seeds import phew_masks, random_seed_masks
from growth.topology import UnsupportedTopologyError, layer_graph
from growth.train import Engine, make_optimizer
from tests.conftest import REPO, compose_cfg

SHAPE, CLASSES = (3, 32, 32), 10
TRACEABLE = ["torchvision.models.resnet18", "torchvision.models.squeezenet1_1"]
MOBILENET = "torchvision.models.mobilenet_v3_small"
TINY = "tests.test_custom_model.TinyNet"
UNTRACEABLE = "tests.test_custom_model.CumsumNet"
# A short growth run: one epoch per round over 90 images in batches of 45, no stop rule.
SHORT = ["trainer.epochs=1", "trainer.batch_size=45", "trainer.cpu_threads=1", "growth.timing.epochs=1",
         "growth.max_rounds=3", "growth.stop.rule=none", "growth.proxy.anneal_epochs=0", "output.progress=false"]


class TinyNet(nn.Module):
    """conv 3x3 - ReLU - pool to 4x4 - flatten - Linear - ReLU - Linear."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.hidden = nn.Linear(width * 16, 32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x))).flatten(1)
        return self.head(torch.relu(self.hidden(x)))


class CumsumNet(TinyNet):
    """TinyNet with a cumulative sum over the hidden units: an operation the tracer cannot follow."""

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x))).flatten(1)
        return self.head(torch.relu(self.hidden(x)).cumsum(1))


class DeclaresItsGrowableWeights(TinyNet):
    def growable_weights(self):
        return ["conv.weight", "head.weight"]


class DeclaresAMissingWeight(TinyNet):
    def growable_weights(self):
        return ["conv.weight", "body.weight"]


def no_classes_argument():
    """A callable without num_classes: the dataset's class count cannot reach it."""
    return TinyNet(num_classes=3)


def not_a_module():
    return {"conv": nn.Conv2d(3, 8, 3)}


def tuple_output():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10), _Pair())


class _Pair(nn.Module):
    def forward(self, x):
        return x, x


@pytest.fixture
def tiny_cifar(tmp_path) -> Path:
    """A CIFAR-10 root holding 100 training and 20 test images (10 and 2 a class), npz layout."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    np.savez(folder / "cifar10.npz",
             train_x=rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), train_y=np.repeat(np.arange(10), 10),
             test_x=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), test_y=np.repeat(np.arange(10), 2))
    return tmp_path / "data"


def custom_cfg(target: str, *overrides: str, root=None, results=None):
    data = [f"dataset.root={root}", "dataset.augment=false"] if root is not None else []
    return compose_cfg(["model=custom", f"model.target={target}", "dataset=cifar10", *data, *overrides], tmp_path=results)


def build(target: str, *overrides: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(custom_cfg(target, *overrides).model, SHAPE, CLASSES)


def example(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(1))


def conv_and_linear_weights(model: nn.Module) -> list[str]:
    return [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def refusal(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    problems = str(err.value).splitlines()[1:]
    assert len(problems) == 1, problems  # one problem, one line
    return problems[0].strip()


def train_one_epoch(model: nn.Module, masks, root: Path) -> dict[str, torch.Tensor]:
    """One epoch of the framework's engine on the tiny CIFAR-10; the growable weights before it."""
    cfg = custom_cfg(TRACEABLE[0], *SHORT, root=root)
    data = build_dataset(cfg.dataset)
    layer_flops, other = forward_flops_per_sample(model, example(), growable_weight_names(model))
    engine = Engine(model, data, cfg.trainer, CostLedger(data.num_train, 1, layer_flops, other),
                    torch.Generator().manual_seed(0))
    optimizer = make_optimizer(cfg.trainer, model, 0.05)
    engine.set_masks(masks, optimizer)
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in masks}
    result = engine.train_epoch(optimizer)
    assert result.batches == 2 and np.isfinite(result.mean_loss)
    return before


def assert_changed_only_inside(model: nn.Module, masks, before) -> None:
    params = dict(model.named_parameters())
    for n, m in masks.items():
        w = params[n].detach()
        assert not w[~m].any(), f"{n}: a weight outside the mask is not zero"
        assert not torch.equal(w[m], before[n][m]), f"{n}: no weight inside the mask changed"


# ---------------------------------------------------------------------------------------------
# Torchvision models the tracer follows


@pytest.mark.parametrize("target", TRACEABLE)
def test_torchvision_model_builds_with_the_datasets_classes_and_lists_its_conv_and_linear_weights(target):
    model = build(target)
    assert type(model).__module__.startswith("torchvision.models")  # the library's own class, not a wrapper
    assert model.eval()(example(2)).shape == (2, CLASSES)
    assert growable_weight_names(model) == conv_and_linear_weights(model)
    assert growable_weight_names(model)  # not an empty list that would make every check vacuous


@pytest.mark.parametrize("target", TRACEABLE)
def test_torchvision_model_scores_seed_and_trains_inside_its_mask(target, tiny_cifar):
    model = build(target)
    masks = phew_masks(model, 0.01, torch.Generator().manual_seed(0), example())

    assert list(masks) == growable_weight_names(model)
    assert all(m.any() for m in masks.values()), [n for n, m in masks.items() if not m.any()]
    target_edges = 0.01 * count_total(masks)
    assert target_edges - 1 <= count_active(masks) <= target_edges + len(masks)
    scores = pwmp_scores(model, masks, example())
    assert list(scores) == list(masks)
    assert all(torch.isfinite(s).all() and (s >= 0).all() and s.sum() > 0 for s in scores.values())

    before = train_one_epoch(model, masks, tiny_cifar)
    assert_changed_only_inside(model, masks, before)


def test_torchvision_model_survives_pickle_deepcopy_and_its_state_dict():
    model = build(TRACEABLE[0], "model.growable=[conv1.weight,fc.weight]").eval()
    x = example(2)
    with torch.no_grad():
        reference = model(x)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert growable_weight_names(clone) == ["conv1.weight", "fc.weight"]
        with torch.no_grad():
            assert torch.equal(clone(x), reference)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert list(model.state_dict()) == list(build(TRACEABLE[0]).state_dict())  # the library's names, no prefix
    fresh = build(TRACEABLE[0], "model.growable=[conv1.weight,fc.weight]").eval()
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh(x), reference)


def test_pwmpr_grows_torchvision_resnet18_round_by_round(tiny_cifar, tmp_path):
    cfg = custom_cfg(TRACEABLE[0], *SHORT, root=tiny_cifar, results=tmp_path / "results")
    summary = run(cfg)

    assert summary["status"] == "finished" and summary["model"] == "custom" and summary["rounds"] == 3
    run_dir = Path(summary["run_dir"])
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    rows = list(csv.DictReader(open(run_dir / "rounds.csv")))
    densities = [float(r["density"]) for r in rows]
    edges = [int(r["edges"]) for r in rows]
    assert len(rows) == 3 and densities[0] == pytest.approx(0.01, abs=1e-4)
    assert all(b > a for a, b in zip(edges, edges[1:])), edges  # every round grew edges
    assert densities[1] / densities[0] == pytest.approx(1.25, rel=0.01)
    model = build(TRACEABLE[0])
    assert {k.split(":", 1)[1] for k in rows[0] if k.startswith("layer_density:")} == set(growable_weight_names(model))


def test_two_custom_models_never_share_a_run_directory():
    names = {run_dir_for(custom_cfg(t, *o)).name for t, o in [
        (TRACEABLE[0], ()), (TRACEABLE[1], ()), (TRACEABLE[0], ("model.kwargs={zero_init_residual:true}",)),
        (TRACEABLE[0], ("model.growable=[fc.weight]",))]}
    assert len(names) == 4 and all("-custom-" in n for n in names)
    # the default call's settings are the defaults: an explicitly empty kwargs names the same run
    assert run_dir_for(custom_cfg(TRACEABLE[0], "model.kwargs={}")) == run_dir_for(custom_cfg(TRACEABLE[0]))


# ---------------------------------------------------------------------------------------------
# MobileNet-V3-small: depthwise convolutions, which the tracer does not follow


def test_mobilenet_scores_and_trains_on_a_random_seed_but_cannot_be_traced(tiny_cifar):
    model = build(MOBILENET)
    assert model.eval()(example(2)).shape == (2, CLASSES)
    masks = random_seed_masks(model, 0.05, torch.Generator().manual_seed(0))
    scores = pwmp_scores(model, masks, example())
    assert all(torch.isfinite(s).all() and (s >= 0).all() for s in scores.values())
    before = train_one_epoch(model, masks, tiny_cifar)
    assert_changed_only_inside(model, masks, before)

    with pytest.raises(UnsupportedTopologyError, match=r"layer 'features\.1\.block\.0\.0\.weight' is a grouped convolution"):
        layer_graph(model, example())


def test_mobilenet_with_a_phew_seed_is_refused_before_anything_is_written(tiny_cifar, tmp_path):
    results = tmp_path / "results"
    for overrides, needs in [((), "growth.seed_builder=phew"), (("method=phew",), "method=phew")]:
        cfg = custom_cfg(MOBILENET, *overrides, root=tiny_cifar, results=results)
        with pytest.raises(ConfigError) as err:
            run(cfg)
        message = str(err.value)
        assert "model.target=torchvision.models.mobilenet_v3_small cannot be traced" in message and needs in message
        assert "layer 'features.1.block.0.0.weight' is a grouped convolution (groups=16)" in message
    assert not results.exists() or not any(results.iterdir())
    # Nothing in a run with a random seed traces the model: it is accepted.
    validate(custom_cfg(MOBILENET, "growth.seed_builder=random", root=tiny_cifar))
    validate(custom_cfg(MOBILENET, "method=rigl", root=tiny_cifar))


# ---------------------------------------------------------------------------------------------
# A model defined in this module, and the growable override


def test_a_model_of_this_module_gets_its_kwargs_and_the_datasets_classes():
    model = build(TINY, "model.kwargs={width:4}")
    assert type(model).__name__ == "TinyNet" and model.conv.out_channels == 4
    assert model.head.out_features == CLASSES
    assert growable_weight_names(model) == ["conv.weight", "hidden.weight", "head.weight"]
    graph = layer_graph(model, example())
    assert graph.input_layers == ("conv.weight",) and graph.output_layers == ("head.weight",)
    # num_classes in model.kwargs wins over the dataset's (validation then refuses the mismatch)
    assert build(TINY, "model.kwargs={num_classes:4}").head.out_features == 4


def test_only_the_listed_weights_are_masked_and_grown(tiny_cifar, tmp_path):
    listed = ["conv.weight", "head.weight"]
    cfg = custom_cfg(TINY, f"model.growable=[{','.join(listed)}]", "growth.seed_builder=random", "growth.seed_density=0.1",
                     *SHORT, root=tiny_cifar, results=tmp_path / "results")
    summary = run(cfg)
    assert summary["status"] == "finished"
    run_dir = Path(summary["run_dir"])
    rows = list(csv.DictReader(open(run_dir / "rounds.csv")))
    assert [k for k in rows[0] if k.startswith("layer_density:")] == [f"layer_density:{n}" for n in listed]
    assert int(rows[-1]["edges"]) > int(rows[0]["edges"])
    snapshot = torch.load(run_dir / "snapshots" / "round_002.pt", weights_only=True)["model"]
    assert (snapshot["hidden.weight"] != 0).all()  # not growable: trained dense
    for n in listed:
        assert (snapshot[n] == 0).float().mean() > 0.5, n  # sparse: most of it still absent


def test_a_model_that_declares_its_growable_weights_keeps_them_unless_the_config_lists_others():
    target = "tests.test_custom_model.DeclaresItsGrowableWeights"
    assert growable_weight_names(build(target)) == ["conv.weight", "head.weight"]
    assert growable_weight_names(build(target, "model.growable=[hidden.weight]")) == ["hidden.weight"]
    message = refusal(custom_cfg("tests.test_custom_model.DeclaresAMissingWeight", "growth.seed_builder=random"))
    assert "unknown parameters ['body.weight']" in message and "set model.growable" in message


def test_a_growable_list_that_leaves_a_layer_out_cannot_give_a_phew_seed():
    message = refusal(custom_cfg(TINY, "model.growable=[conv.weight,head.weight]"))
    assert "cannot be traced" in message and "growth.seed_builder=phew" in message
    assert "layer 'head.weight'" in message and "linear whose weight 'hidden.weight' is not growable" in message


def test_an_operation_the_tracer_cannot_follow_stops_the_run_before_anything_is_written(tiny_cifar, tmp_path):
    results = tmp_path / "results"
    with pytest.raises(ConfigError) as err:
        run(custom_cfg(UNTRACEABLE, *SHORT, root=tiny_cifar, results=results))
    message = str(err.value)
    assert f"model.target={UNTRACEABLE} cannot be traced" in message
    assert "layer 'head.weight' is reached through an unsupported op 'cumsum'" in message
    assert not results.exists() or not any(results.iterdir())
    # the model itself is fine: with a random seed it runs
    summary = run(custom_cfg(UNTRACEABLE, *SHORT, "growth.seed_builder=random", "growth.seed_density=0.1",
                             root=tiny_cifar, results=results))
    assert summary["status"] == "finished"


# ---------------------------------------------------------------------------------------------
# Bad inputs: one line each, before anything runs


@pytest.mark.parametrize(
    "target, overrides, fragments",
    [
        (None, [], ["model.target=None is invalid: an import path package.module.Callable"]),
        ("resnet18", [], ["model.target='resnet18' is invalid: an import path package.module.Callable"]),
        ("nosuch_package.models.Net", [], ["model.target='nosuch_package.models.Net' does not import",
                                           "No module named 'nosuch_package'"]),
        ("torchvision.models.resnet81", [], ["torchvision.models has no attribute 'resnet81'",
                                             "did you mean torchvision.models.resnet18"]),
        ("torchvision.models", [], ["model.target='torchvision.models' is a module, not a callable"]),
        ("torch.pi", [], ["model.target='torch.pi' is a float, not a callable"]),
        ("torchvision.models.resnet18", ["model.kwargs={depth:18}"],
         ["model.target=torchvision.models.resnet18 with model.kwargs={'depth': 18} (num_classes added from the dataset) "
          "raised TypeError", "unexpected keyword argument 'depth'", "model.kwargs must be keyword arguments"]),
        ("tests.test_custom_model.not_a_module", [],
         ["returned an object of type dict, not a torch.nn.Module"]),
        ("tests.test_custom_model.no_classes_argument", [],
         ["with model.kwargs={} returns shape (2, 3) in training mode for inputs of shape (2, 3, 32, 32)",
          "the dataset needs one tensor of logits of shape (N, 10)"]),
        ("torchvision.models.resnet18", ["model.kwargs={num_classes:100}"], ["returns shape (2, 100)"]),
        ("tests.test_custom_model.tuple_output", [], ["returns a tuple in training mode"]),
        ("torchvision.models.resnet18", ["dataset=digits"],
         ["cannot take the dataset's inputs of shape (2, 64)", "it must map (N, *input_shape) to (N, 10) logits"]),
        ("torchvision.models.resnet18", ["model.growable=[fc.weigth]"],
         ["model.growable names 'fc.weigth', not a parameter of ResNet (model.target=torchvision.models.resnet18)",
          "'fc.weight'", "21 Conv2d and Linear weights in all"]),
        ("torchvision.models.resnet18", ["model.growable=[fc.weight,fc.weight]"],
         ["model.growable=['fc.weight', 'fc.weight'] is invalid: null (the model's own growable weights, else every "
          "Conv2d and Linear weight) or a non-empty list of distinct parameter names"]),
        ("torchvision.models.resnet18", ["model.growable=[]"], ["model.growable=[] is invalid"]),
    ],
    ids=["missing", "not-a-path", "no-module", "no-attribute", "a-module", "not-callable", "bad-kwargs",
         "not-a-module", "wrong-classes", "kwargs-classes", "tuple-output", "wrong-input", "unknown-growable",
         "repeated-growable", "empty-growable"],
)
def test_bad_input_is_one_line_naming_the_key(target, overrides, fragments, tmp_path):
    cfg = compose_cfg(["model=custom", *([] if target is None else [f"model.target={target}"]),
                       *([] if any(o.startswith("dataset=") for o in overrides) else ["dataset=cifar10"]), *overrides],
                      tmp_path=tmp_path / "results")
    message = refusal(cfg)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_a_module_that_fails_on_its_own_imports_says_so(tmp_path, monkeypatch):
    (tmp_path / "broken_models.py").write_text("import not_installed_dependency\n\ndef net():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = refusal(custom_cfg("broken_models.net"))
    assert message.startswith("model.target='broken_models.net' does not import")
    assert "No module named 'not_installed_dependency'" in message
    sys.modules.pop("broken_models", None)


def test_a_callable_that_cannot_build_on_the_meta_device_is_built_on_the_cpu_instead():
    with torch.device("meta"), pytest.raises(RuntimeError, match="meta"):
        reads_values_while_building()
    validate(custom_cfg("tests.test_custom_model.reads_values_while_building"))


def reads_values_while_building():
    model = TinyNet()
    if float(model.head.weight.detach().abs().sum()) < 0:  # reading a meta tensor's value raises
        raise AssertionError
    return model


def test_growable_weights_object_pickles_and_says_what_it_holds():
    holder = GrowableWeights(["a.weight"])
    assert pickle.loads(pickle.dumps(holder))() == ["a.weight"] and "a.weight" in repr(holder)
    returned = holder()
    returned.append("b.weight")
    assert holder() == ["a.weight"]  # a caller changing the list it got changes nothing


def test_launch_refuses_a_bad_target_with_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "model=custom", "model.target=nosuch_package.Net", f"output.root={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error:"), lines
    problems = [line.strip() for line in lines[1:]]
    assert problems == [problems[0]] and problems[0].startswith("model.target='nosuch_package.Net' does not import"), lines
    assert not list(tmp_path.glob("pwmpr-*")), "no run directory may be created for a refused config"
