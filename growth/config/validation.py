"""Validation of a composed config, before a run directory is touched or a job submitted.

Three sources, none of them a list of keys: the checks every schema field carries
(growth.config.checks), the validator of every registry entry the config selects (a method's,
a dataset's, a model's, ...), and the few rules below that relate sections to one another.
Every problem is one line naming the key and what is valid; all are raised together.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from growth.config.checks import field_checks
from growth.config.hints import unknown_key_problems
from growth.errors import ConfigError


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=True)


def field_problems(node: DictConfig, path: str = "") -> list[str]:
    """The checks of every field of every schema section, walking the config's typed nodes."""
    problems: list[str] = []
    kind = OmegaConf.get_type(node)
    fields = {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}
    for name in node:
        if name in ("hydra", "defaults"):
            continue
        key = f"{path}.{name}" if path else str(name)
        child = node._get_node(name)
        if isinstance(child, DictConfig):
            if not child._is_none() and not child._is_missing():
                problems += field_problems(child, key)
            continue
        f = fields.get(str(name))
        if f is None:
            continue
        value = node[name]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        for check in field_checks(f):
            problem = check.problem(key, value)
            if problem:
                problems.append(problem)
                break
    return problems


def schema_problems(cfg: DictConfig) -> list[str]:
    """An entry chosen by setting its name alone (`growth.stop.rule=x`, `method.name=x`) keeps the
    settings of the option its group chose, which may not be the entry's: say how to choose it."""
    problems = []
    for entry in selected_entries(cfg):
        registry = _registry(entry.kind)
        if registry.group is None or entry.schema is None:
            continue
        section = OmegaConf.select(cfg, registry.key.rpartition(".")[0])
        kind = OmegaConf.get_type(section) if isinstance(section, DictConfig) else None
        if isinstance(kind, type) and not issubclass(kind, entry.schema):
            problems.append(
                f"{registry.key}={entry.name!r} needs its own settings ({entry.schema.__name__}): choose it with "
                f"{registry.group}={entry.name}, not by setting {registry.key} alone"
            )
    return problems


def _registry(kind: str):
    from growth.registry import REGISTRIES

    return REGISTRIES[kind]


def selected_entries(cfg: DictConfig) -> list:
    """The registry entries this config selects (method, score, seed builder, rule, dataset, ...)."""
    from growth import kinds  # noqa: F401  (creates the registries)
    from growth.registry import REGISTRIES

    found = []
    for registry in REGISTRIES.values():
        name = OmegaConf.select(cfg, registry.key, default=None)
        if isinstance(name, str) and name in registry:
            found.append(registry.entry(name))
    return found


def model_fit_problems(cfg: DictConfig) -> list[str]:
    """The model's own checks against the dataset's input shape and class count, by building it on
    the meta device (no memory, no random draws) before anything is written or submitted."""
    from growth.data import dataset_shape
    from growth.kinds import DATASETS, MODELS
    from growth.models import build_on_meta

    if cfg.model.name not in MODELS or cfg.dataset.name not in DATASETS:
        return []
    if MODELS.entry(cfg.model.name).validate is not None:
        return []  # the model's own validator builds it and says what does not fit (model=custom)
    try:
        model = build_on_meta(cfg.model, cfg.dataset)
    except ConfigError as exc:
        shape = dataset_shape(cfg.dataset)
        return [
            f"model={cfg.model.name} does not fit dataset={cfg.dataset.name} (inputs of shape {shape[0]}, "
            f"{shape[1]} classes): {exc}"
        ]
    except Exception as exc:  # e.g. sizes whose tensors cannot even be described (an overflow)
        settings = model_settings(cfg)
        return [f"model={cfg.model.name} cannot be built with {settings} for dataset={cfg.dataset.name}: "
                f"{type(exc).__name__}: {exc}"]
    if model is None:
        return []
    too_large = [(n, p.numel()) for n, p in model.named_parameters() if p.numel() > MAX_TENSOR_ELEMENTS]
    if too_large:
        name, numel = too_large[0]
        settings = model_settings(cfg)
        return [f"model={cfg.model.name} is too large with {settings}: its parameter {name} has {numel:,} elements, more than "
                f"{MAX_TENSOR_ELEMENTS:,} (2**31 - 1, what masks, sampling and sparse kernels index): choose smaller model settings"]
    return path_density_problems(cfg, model)


def model_settings(cfg: DictConfig) -> str:
    """The model section's settings as the command line gives them (model.depth=32, ...)."""
    return ", ".join(f"model.{k}={v}" for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "name")


def sparse_density_key(cfg: DictConfig) -> str | None:
    """The key that sets the sparsest network this run trains: a fixed-density method's density,
    a pruning method's floor, a growth method's seed (none for a dense run)."""
    from growth.kinds import METHODS

    if cfg.method.name not in METHODS:
        return None
    for key in ("density", "min_density"):
        if key in cfg.method:
            return f"method.{key}"
    if METHODS.entry(cfg.method.name).info.get("family") == "growth":
        return "growth.seed_density"
    return None


def path_density_problems(cfg: DictConfig, model) -> list[str]:
    """A density so small that the network cannot have a path from the input to every output:
    that needs at least one edge in each growable layer and one into each output unit. Below it a
    run would train at chance and report that as a result."""
    from growth.masks import growable_weight_names

    key = sparse_density_key(cfg)
    value = OmegaConf.select(cfg, key) if key else None
    if not isinstance(value, (int, float)) or not 0 < value <= 1:
        return []  # absent, or already refused by its own check
    names = growable_weight_names(model)
    if not names:
        return []
    from growth.data import dataset_shape

    weights = [model.get_parameter(n) for n in names]
    total = sum(w.numel() for w in weights)
    outputs = dataset_shape(cfg.dataset)[1]
    needed = outputs + len(weights) - 1
    edges = math.floor(value * total + 1e-9)
    if edges >= needed:
        return []
    return [
        f"{key}={value} is too small for model={cfg.model.name}: it keeps {edges:,} of {total:,} weights, and a path from the "
        f"input to each of the {outputs} outputs through the {len(weights)} layers needs at least {needed:,}: choose {key} "
        f">= {needed / total:.3g}"
    ]


# The most elements one weight may have: masks, index sampling and sparse tensors index with 32 bits.
MAX_TENSOR_ELEMENTS = 2**31 - 1


def output_problems(cfg: DictConfig) -> list[str]:
    """A results root that cannot be created or written (checked without writing anything, so a
    sweep fails before any job is submitted; the run itself probes again before it writes)."""
    import os
    from pathlib import Path

    key = "output.run_dir" if cfg.output.run_dir else "output.root"
    target = Path(os.path.expanduser(str(_get(cfg, key))))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        why = "is not a directory"
    elif existing in (target, target.parent) and not os.access(existing, os.W_OK | os.X_OK):
        why = "is not writable"
    else:  # (a missing folder further up may exist only where the jobs run)
        return []
    return [f"{key}={str(target)!r} is invalid: {existing} {why}; choose a writable {key} (or set GROWTH_RESULTS)"]




def growth_problems(cfg: DictConfig) -> list[str]:
    g = cfg.growth
    if 0 < g.seed_density <= 1 and 0 < g.max_density <= 1 and g.seed_density > g.max_density:
        return [
            f"growth.seed_density={g.seed_density} is above growth.max_density={g.max_density}: "
            "the seed must not be denser than the largest density growth may reach"
        ]
    return []


def proxy_problems(cfg: DictConfig) -> list[str]:
    p = cfg.growth.proxy
    if p.source == "ema" and not p.ema_halflife > 0:
        return [f"growth.proxy.source='ema' needs growth.proxy.ema_halflife > 0 (it is {p.ema_halflife}): "
                "say how long the average remembers, e.g. growth.proxy.ema_halflife=0.1"]
    return []


def extensive_problems(cfg: DictConfig) -> list[str]:
    e = cfg.extensive
    if e.which == "listed" and e.densities is None:
        return ["extensive.which='listed' needs extensive.densities: the densities whose nearest snapshots to train, e.g. extensive.densities=[0.02,0.05]"]
    if e.which != "listed" and e.densities is not None:
        return [f"extensive.densities={list(e.densities)} applies only with extensive.which=listed (it is {e.which!r})"]
    return []


def budget_problems(cfg: DictConfig) -> list[str]:
    from growth.kinds import METHODS

    b, problems = cfg.budget, []
    if b.reference is not None and b.match is None:
        problems.append(f"budget.reference={b.reference!r} needs budget.match (the method whose finished run it names)")
    if b.match is not None and b.epochs is not None:
        problems.append("budget.match and budget.epochs are both set: give the length one way, not two")
    if b.snapshot is not None and b.match is None:
        problems.append(f"budget.snapshot={b.snapshot} needs budget.match (the run whose snapshot it names)")
    if b.match is not None and cfg.method.name in METHODS:
        if not METHODS.entry(cfg.method.name).info.get("matched_budget", False):
            takes = [e.name for e in METHODS.entries() if e.info.get("matched_budget")]
            problems.append(
                f"budget.match={b.match!r} needs a fixed-density method ({', '.join(takes)}), not method={cfg.method.name!r}"
            )
    return problems


def trainer_problems(cfg: DictConfig) -> list[str]:
    t, problems = cfg.trainer, []
    m = cfg.method
    if m.get("rewind") == "epoch" and isinstance(m.get("rewind_epoch"), int) and m.rewind_epoch >= t.epochs >= 1:
        problems.append(f"method.rewind_epoch={m.rewind_epoch} is invalid: an epoch below trainer.epochs={t.epochs}, "
                        "which the dense training reaches (0 rewinds to the initial weights)")
    late = [m for m in t.milestones if isinstance(m, int) and m >= t.epochs]
    if t.schedule == "step" and late and t.epochs >= 1:
        problems.append(
            f"trainer.milestones={list(t.milestones)} has {late} at or beyond trainer.epochs={t.epochs}, where the "
            f"schedule has ended, so they never apply: give milestones below {t.epochs} (or trainer.milestones=[])"
        )
    if t.devices >= 1 and t.nodes >= 1 and t.batch_size < t.devices * t.nodes:
        problems.append(
            f"trainer.batch_size={t.batch_size} is invalid: at least trainer.devices x trainer.nodes = "
            f"{t.devices * t.nodes} (the global batch is split over the processes)"
        )
    if t.compile or t.precision == "bf16":
        import torch

        from growth.train import compile_problem

        device = str(t.device)
        kind = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device.split(":")[0]
        problem = compile_problem(kind) if t.compile else None
        if problem:
            problems.append(problem)
        if t.precision == "bf16" and kind == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            problems.append(
                "trainer.precision='bf16' is invalid: this GPU has no bfloat16 support (it needs compute "
                "capability 8.0, Ampere, or newer): use trainer.precision=fp32"
            )
    return problems


def study_problems(cfg: DictConfig) -> list[str]:
    from growth.kinds import METHODS

    st, problems = cfg.study, []
    if st.name is None:
        return problems
    known = METHODS.names()
    for key in ("growth_methods", "baselines", "matched_methods"):
        unknown = [x for x in st[key] if x not in known]
        if unknown:
            problems.append(f"study.{key} has unknown methods {unknown}: valid are {known}")
    if st.reference not in known:
        problems.append(f"study.reference={st.reference!r} is invalid: one of {known}")
    elif st.matched_methods and st.reference not in st.growth_methods:
        problems.append(
            f"study.reference={st.reference!r} is not one of study.growth_methods={list(st.growth_methods)}: the matched "
            "methods take their densities and budgets from the reference's runs, so the study must run it"
        )
    unknown = [x for x in st.method_overrides if x not in known]
    if unknown:
        problems.append(f"study.method_overrides names unknown methods {unknown}: valid are {known}")
    return problems


# Rules that relate one section to another (the rest lives in the schemas and the entries).
CROSS_SECTION_RULES = (schema_problems, growth_problems, proxy_problems, extensive_problems, budget_problems, trainer_problems, study_problems, model_fit_problems, output_problems)


def validate(cfg: DictConfig) -> None:
    """Check ranges and contradictions; raise ConfigError naming the key and what is valid."""
    problems = field_problems(cfg)
    rules = [entry.validate for entry in selected_entries(cfg) if entry.validate is not None]
    for rule in [*rules, *CROSS_SECTION_RULES, unknown_key_problems]:
        if rule is model_fit_problems and any("model" in p for p in problems):
            continue  # the model's own settings are refused: building it would only repeat that (or never end)
        try:
            problems += rule(cfg)
        except Exception:
            # A rule may assume the values its fields' checks guarantee; when some are refused
            # already, those refusals are the message (and a rule's own error would bury them).
            if not problems:
                raise
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(problems)))
