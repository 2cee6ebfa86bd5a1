"""The architecture's promises: layers import downward with no cycles; a growth score, a
fixed-density method and a model are each one new file plus one yaml, touching no existing file;
choices and Hydra's store come from the registries."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests.conftest import FAST, REPO, compose_cfg

PACKAGES = ("growth", "baselines", "analysis", "growth_cli")


# ------------------------------------------------------------------ imports


def module_imports() -> dict[str, set[str]]:
    """Every import of every module of the three packages, those inside functions included,
    resolved to the framework's modules (a package's own submodules count, its parent does not)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
                names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant)]
            else:
                continue
            for name in names:
                target = resolve(name)
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_the_frameworks_modules():
    assert cycles(module_imports()) == []


def test_growth_imports_neither_baselines_nor_analysis():
    upward = {m: sorted(d for d in deps if d.split(".")[0] in ("baselines", "analysis"))
              for m, deps in module_imports().items() if m.split(".")[0] == "growth"}
    assert {m: d for m, d in upward.items() if d} == {}


def test_only_the_command_line_imports_the_command_line():
    graph = module_imports()
    below = {m: sorted(d for d in deps if d.split(".")[0] == "growth_cli")
             for m, deps in graph.items() if m.split(".")[0] != "growth_cli"}
    assert {m: d for m, d in below.items() if d} == {}
    assert any(d.startswith("analysis") for d in graph["growth_cli.launch"])  # the layer above analysis


def test_the_schema_is_a_leaf():
    graph = module_imports()
    leaves = ("growth.config.schema", "growth.config.checks", "growth.registry", "growth.kinds", "growth.errors")
    allowed = set(leaves) | {"growth.config"}
    for leaf in leaves:
        assert graph[leaf] <= allowed, (leaf, graph[leaf] - allowed)


def test_no_library_module_exits_the_process():
    """Library code raises; only launch.py (and a module's own command-line main) decides how to exit."""
    offenders = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef) and node.name == "main":
                    continue  # `python -m ...` entry points return an exit code
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exit" \
                        and getattr(node.func.value, "id", None) == "sys":
                    if not _inside_main_guard(path, node):
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def _inside_main_guard(path: Path, call: ast.Call) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            if any(n.lineno == call.lineno for n in ast.walk(node) if hasattr(n, "lineno")):
                return True
    return False


def test_no_private_hydra_api():
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            assert "hydra._internal" not in path.read_text(encoding="utf-8"), path


# ------------------------------------------------------------------ one file per addition

SCORE = '''
"""Score `init_wg`: |w0 x dL/dw| with the initial weights w0, on a few training batches (a
first-order estimate of what an absent edge would change if it came back at its initial value)."""

import torch

from growth.grow import register_growth_method
from growth.kinds import SCORES
from growth.masks import growable_parameters

register_growth_method("init_wg", label="|w0 g| growth")  # method=init_wg: its yaml picks the score


@SCORES.register("init_wg")
def init_weight_gradient(inputs):
    params = growable_parameters(inputs.model)
    init = inputs.initial_weights()
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for i, (loss, samples) in enumerate(inputs.batch_losses()):
        inputs.model.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in params.items():
            total[n] += (init[n].to(p.device) * p.grad).abs().double()
        inputs.charge_flops(3.0 * inputs.dense_forward_flops * samples)
        if i + 1 >= inputs.settings.gradient_batches:
            break
    inputs.model.zero_grad(set_to_none=True)
    return total
'''
SCORE_YAML = '''
# Growth by |w0 x g|, sampled like PWMPR.
defaults:
  - init_wg_schema
name: init_wg
score: init_wg
selection: sample
'''
METHOD = '''
from growth.grow import GrowthMethodConfig, GrowthRun
from growth.methods import register_method

register_method("init_wg", schema=GrowthMethodConfig, family="growth", label="|w0 g| growth")(GrowthRun)
'''

METHOD = '''
"""Magnitude at initialisation: keep the largest initial |w| of every layer at method.density,
then train (a one-shot pruning-at-init baseline)."""

from dataclasses import dataclass

import torch

from growth.config.checks import key, one_of
from growth.fixed import FixedDensityConfig, FixedDensityRun
from growth.masks import growable_parameters
from growth.methods import register_method


@dataclass
class InitMagnitudeConfig(FixedDensityConfig):
    # layer: the same density in every layer; global: one threshold over all layers.
    scope: str = key("layer", one_of("layer", "global"))


@register_method("init_magnitude", schema=InitMagnitudeConfig, family="fixed_density",
                 label="magnitude at init", matched_budget=True)
class InitMagnitudeRun(FixedDensityRun):
    def build_masks(self):
        params = growable_parameters(self.model)
        if self.cfg.method.scope == "global":
            flat = torch.cat([p.detach().abs().flatten() for p in params.values()])
            k = max(1, round(self.density_target * flat.numel()))
            threshold = torch.topk(flat, k).values[-1]
            return {n: p.detach().abs() >= threshold for n, p in params.items()}
        masks = {}
        for n, p in params.items():
            k = max(1, round(self.density_target * p.numel()))
            keep = torch.topk(p.detach().abs().flatten(), k).indices
            mask = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            mask[keep] = True
            masks[n] = mask.view_as(p)
        return masks
'''
METHOD_YAML = '''
defaults:
  - init_magnitude_schema
name: init_magnitude
density: 0.1
scope: layer
'''

MODEL = '''
"""A two-layer MLP with a tanh: the smallest model that is not in the framework."""

from dataclasses import dataclass
import math

from torch import nn

from growth.config import ModelConfig
from growth.config.checks import at_least, key
from growth.kinds import MODELS


@dataclass
class TanhNetConfig(ModelConfig):
    width: int = key(16, at_least(1))


class TanhNet(nn.Module):
    def __init__(self, inputs, classes, width):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.Tanh(), nn.Linear(width, classes))

    def forward(self, x):
        return self.body(x)

    def growable_weights(self):
        return ["body.1.weight", "body.3.weight"]


@MODELS.register("tanhnet", schema=TanhNetConfig)
def build_tanhnet(cfg, input_shape, num_classes):
    return TanhNet(math.prod(input_shape), num_classes, cfg.width)
'''
MODEL_YAML = '''
defaults:
  - tanhnet_schema
name: tanhnet
width: 16
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Write a plugin package (modules) and a config folder (yamls) outside the repository,
    and make the framework find them: GROWTH_PLUGINS names the package, hydra.searchpath the folder."""
    from growth.config.store import register_configs
    from growth.registry import REGISTRIES

    before = {kind: set(r._entries) for kind, r in REGISTRIES.items()}

    def make(package: str, modules: dict[str, str], yamls: dict[str, str]) -> list[str]:
        pkg = tmp_path / "plugins" / package
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        for name, text in modules.items():
            (pkg / f"{name}.py").write_text(textwrap.dedent(text))
        for name, text in yamls.items():
            target = tmp_path / "conf" / f"{name}.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))
        monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
        monkeypatch.setenv("GROWTH_PLUGINS", package)
        register_configs()
        return [f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]

    yield make
    for kind, registry in REGISTRIES.items():
        for name in set(registry._entries) - before.get(kind, set()):
            registry.remove(name)
    import sys

    for name in [m for m in sys.modules if m.split(".")[0].startswith("toy_")]:
        del sys.modules[name]


def file_lines(text: str) -> int:
    return len([line for line in textwrap.dedent(text).strip().splitlines()])


def run_few_steps(overrides, tmp_path):
    from growth.run import run

    fast = [o for o in FAST if not (o.startswith("model.") and any(x.startswith("model=") for x in overrides))]
    cfg = compose_cfg([*fast, "trainer.epochs=2", "growth.max_rounds=3", *overrides], tmp_path / "results")
    return run(cfg)


def test_a_growth_score_is_one_file_and_one_yaml(plugin, tmp_path):
    assert file_lines(SCORE) <= 40
    search = plugin("toy_scores", {"init_wg": SCORE}, {"method/init_wg": SCORE_YAML})
    summary = run_few_steps([*search, "method=init_wg"], tmp_path)
    assert summary["status"] == "finished" and summary["label"] == "|w0 g| growth" and summary["family"] == "growth"
    import csv

    rows = list(csv.DictReader(open(Path(summary["run_dir"]) / "rounds.csv")))
    assert [int(r["edges"]) for r in rows] == sorted(int(r["edges"]) for r in rows) and int(rows[-1]["edges"]) > int(rows[0]["edges"])
    # The score charged its gradient passes: growth cost more than the same rounds grown at random.
    random = run_few_steps(["method=rg"], tmp_path)
    assert summary["growth_cost"]["cost_flops"] > random["growth_cost"]["cost_flops"]


def test_a_fixed_density_method_is_one_file_and_one_yaml(plugin, tmp_path):
    assert file_lines(METHOD) <= 60
    search = plugin("toy_methods", {"init_magnitude": METHOD}, {"method/init_magnitude": METHOD_YAML})
    summary = run_few_steps([*search, "method=init_magnitude", "method.density=0.2"], tmp_path)
    assert summary["status"] == "finished" and summary["family"] == "fixed_density"
    assert summary["density"] == pytest.approx(0.2, abs=0.01)
    # Its own schema is checked: a value outside its choices is refused, naming the choices.
    from growth.config.validation import validate
    from growth.errors import ConfigError

    with pytest.raises(ConfigError, match=r"method.scope='row' is invalid: one of \['layer', 'global'\]"):
        validate(compose_cfg([*search, "method=init_magnitude", "method.scope=row"], tmp_path / "results"))


def test_a_model_is_one_file_and_one_yaml(plugin, tmp_path):
    search = plugin("toy_models", {"tanhnet": MODEL}, {"model/tanhnet": MODEL_YAML})
    summary = run_few_steps([*search, "model=tanhnet", "model.width=24", "method=pwmpr", "growth.seed_builder=phew"], tmp_path)
    assert summary["status"] == "finished" and summary["model"] == "tanhnet"
    assert summary["rounds"] == 3 and summary["test_accuracy"] is not None


def test_what_the_examples_in_the_docs_say_is_what_the_tests_run():
    docs = (REPO / "docs" / "extending.md").read_text(encoding="utf-8")
    for text in (SCORE, METHOD, MODEL, SCORE_YAML, METHOD_YAML, MODEL_YAML):
        assert textwrap.dedent(text).strip() in docs


# ------------------------------------------------------------------ registries


def test_every_registered_entry_of_a_group_has_its_schema_in_the_store():
    from hydra.core.config_store import ConfigStore

    from growth.registry import load_all

    repo = ConfigStore.instance().repo
    for registry in load_all().values():
        if registry.group is None:
            continue
        for entry in registry.entries():
            assert entry.schema is not None, (registry.kind, entry.name)
            node = repo
            for part in registry.group.split("/"):
                node = node[part]
            assert f"{entry.name}_schema.yaml" in node, (registry.kind, entry.name)


def test_choices_come_from_the_registries(tmp_path):
    from growth.config.validation import validate
    from growth.errors import ConfigError
    from growth.kinds import SCORES, STOP_RULES

    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(["method.score=nope", "growth.stop.rule=never", "growth.seed_builder=nope"], tmp_path))
    text = str(err.value)
    assert f"method.score='nope' is invalid: one of {SCORES.names()}" in text
    assert f"growth.stop.rule='never' is invalid: one of {STOP_RULES.names()}" in text
    assert "growth.seed_builder='nope' is invalid: one of ['phew', 'random']" in text


def test_a_field_check_follows_the_field_not_its_name(tmp_path):
    """A method whose field is called prune_fraction gets that field's own checks, not IMP's."""
    from dataclasses import dataclass

    from growth.config import MethodConfig
    from growth.config.checks import at_least, key
    from growth.config.validation import field_problems
    from omegaconf import OmegaConf

    @dataclass
    class Other(MethodConfig):
        prune_fraction: float = key(5.0, at_least(2))

    node = OmegaConf.structured(Other(name="pwmpr"))
    assert field_problems(node, "method") == []
    node.prune_fraction = 1.0  # in IMP's range (0, 1), outside this one's
    assert field_problems(node, "method") == ["method.prune_fraction=1.0 is invalid: at least 2"]


@pytest.mark.slow
def test_a_method_registered_from_a_new_file_is_in_the_figures_tables_and_report(plugin, tmp_path):
    """analysis knows no method names: a method registered from a temporary module, run for real,
    appears in the performance-density data, the density table and the report by its label."""
    from analysis import load_table, write_report
    from analysis.figures import plot_performance_density
    from analysis.tables import density_table, to_markdown

    search = plugin("toy_analysis", {"init_magnitude": METHOD}, {"method/init_magnitude": METHOD_YAML})
    for seed in (0, 1):
        run_few_steps([*search, "method=pwmpr", f"seed={seed}"], tmp_path)
        for d in (0.05, 0.1):
            assert run_few_steps([*search, "method=init_magnitude", f"method.density={d}", f"seed={seed}"], tmp_path)["status"] == "finished"
    table = load_table(tmp_path / "results")
    toy = table[table["method"] == "init_magnitude"]
    assert len(toy) == 4 and set(toy["label"]) == {"magnitude at init"} and set(toy["family"]) == {"fixed_density"}
    fig = plot_performance_density(table)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert any("magnitude at init" in label for label in labels), labels
    dt = density_table(table, densities=(0.05, 0.1))
    assert "magnitude at init" in to_markdown(dt)
    write_report(table, tmp_path / "analysis")
    assert "magnitude at init" in (tmp_path / "analysis" / "report.html").read_text(encoding="utf-8")


def test_every_method_has_its_own_colour():
    """Figures tell methods apart by colour alone: two methods sharing one would read as one."""
    from growth.kinds import METHODS

    colours = {}
    for entry in METHODS.entries():
        colours.setdefault(entry.info["color"], []).append(entry.name)
    assert {c: names for c, names in colours.items() if len(names) > 1} == {}
