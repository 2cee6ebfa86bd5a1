"""``custom``: any ``nn.Module`` named by an import path, Hydra's ``_target_`` convention:
``model=custom model.target=torchvision.models.resnet18 model.kwargs={weights:null}``.

``model.target`` is ``package.module.Callable`` (a class or a function); it is called with
``model.kwargs``, plus ``num_classes`` set to the dataset's class count when the callable names a
``num_classes`` parameter (or takes ``**kwargs``) and ``model.kwargs`` does not give it. The input
channels are the callable's business: the model must take the dataset's (N, *input_shape) batches
and return (N, num_classes) logits, and validation checks that it does.

Growable weights: ``model.growable`` null means the model's own ``growable_weights()`` when it
declares them, else every Conv2d and Linear weight (in registration order); a list names them
(parameter names as ``named_parameters()`` gives them). The list is
attached to the built model as its ``growable_weights()``, a picklable callable, so the model
stays the callable's own class: its parameter names, state dicts and FLOP counts are the
library's.

Before anything runs, the entry's validator builds the model on the meta device, checks its output
shape on a batch of the dataset's shape, and, when the run will trace it (a growth method's PHEW
seed, ``growth.seed_builder=phew``, or ``method=phew``), traces its layer graph
(growth.topology): a structure the tracer cannot follow is refused then, naming the layer and the
operation. Every problem is one line naming ``model.target``, ``model.kwargs`` or
``model.growable``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from growth.config import ModelConfig
from growth.config.checks import key, satisfies
from growth.errors import ConfigError
from growth.kinds import MODELS
from growth.masks import growable_weight_names
from growth.models.common import linear_and_conv_weights, model_name

_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
TARGET_VALID = "an import path package.module.Callable that returns an nn.Module, e.g. torchvision.models.resnet18"
GROWABLE_VALID = ("null (the model's own growable weights, else every Conv2d and Linear weight) or a non-empty list "
                  "of distinct parameter names")


def _is_import_path(value: Any) -> bool:
    return isinstance(value, str) and _IMPORT_PATH.fullmatch(value) is not None


def _is_growable_list(value: Any) -> bool:
    if value is None:
        return True
    names = list(value)
    return bool(names) and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)


@dataclass
class CustomModelConfig(ModelConfig):
    name: str = model_name("custom")
    target: Optional[str] = key(None, satisfies(_is_import_path, TARGET_VALID))
    # Keyword arguments of the callable; num_classes is added from the dataset when the callable
    # takes it and this does not set it. An open dict (the rest of the config is struct), so
    # model.kwargs.width_mult=0.5 and model.kwargs={...} add keys without a leading +.
    kwargs: dict[str, Any] = key(None, satisfies(lambda x: isinstance(x, dict), "a mapping of keyword arguments, e.g. model.kwargs={weights:null}"),
                                 factory=lambda: OmegaConf.create({}, flags={"struct": False}))
    # null: the model's own growable_weights(), else every Conv2d and Linear weight; or these names.
    growable: Optional[list[str]] = key(None, satisfies(_is_growable_list, GROWABLE_VALID))


class GrowableWeights:
    """A model's ``growable_weights()`` as an object (a module-level class pickles; a closure would not)."""

    def __init__(self, names: list[str]):
        self.names = list(names)

    def __call__(self) -> list[str]:
        return list(self.names)

    def __repr__(self) -> str:
        return f"GrowableWeights({self.names})"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def resolve_target(target: str):
    """The object `target` names: the longest importable module prefix, then attributes."""
    parts = target.split(".")
    module, error = None, None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
            break
        except ModuleNotFoundError as exc:
            # Only the prefix itself being absent means "try a shorter one"; a module that is there
            # but fails on its own imports reports that.
            prefix = ".".join(parts[:cut])
            if exc.name is None or not (prefix == exc.name or prefix.startswith(exc.name + ".")):
                raise ConfigError(f"model.target={target!r} does not import: {_one_line(exc)}") from None
            error = exc
        except Exception as exc:  # the module is there but raises when imported
            raise ConfigError(f"model.target={target!r} does not import: {type(exc).__name__}: {_one_line(exc)}") from None
    if module is None:
        raise ConfigError(f"model.target={target!r} does not import ({_one_line(error)}): it must be {TARGET_VALID}")
    obj, path = module, ".".join(parts[:cut])
    for part in parts[cut:]:
        if not hasattr(obj, part):
            close = difflib.get_close_matches(part, [n for n in dir(obj) if not n.startswith("_")], n=3)
            hint = f"did you mean {', '.join(f'{path}.{c}' for c in close)}?" if close else f"it must be {TARGET_VALID}"
            raise ConfigError(f"model.target={target!r} does not import: {path} has no attribute {part!r}; {hint}")
        obj, path = getattr(obj, part), f"{path}.{part}"
    if not callable(obj) or inspect.ismodule(obj):
        raise ConfigError(f"model.target={target!r} is a {type(obj).__name__}, not a callable: it must be {TARGET_VALID}")
    return obj


def _takes_num_classes(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins)
        return False
    return any(p.kind is p.VAR_KEYWORD or (p.name == "num_classes" and p.kind is not p.POSITIONAL_ONLY) for p in params)


def call_arguments(cfg, fn, num_classes: int) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(cfg.kwargs, resolve=True) if OmegaConf.is_config(cfg.kwargs) else dict(cfg.kwargs or {})
    if "num_classes" not in kwargs and _takes_num_classes(fn):
        kwargs["num_classes"] = int(num_classes)
    return kwargs


def _describe_call(cfg, kwargs: dict) -> str:
    given = OmegaConf.to_container(cfg.kwargs, resolve=True) if OmegaConf.is_config(cfg.kwargs) else dict(cfg.kwargs or {})
    added = " (num_classes added from the dataset)" if "num_classes" in kwargs and "num_classes" not in given else ""
    return f"model.target={cfg.target} with model.kwargs={given}{added}"


def _call(cfg, fn, kwargs: dict) -> Any:
    try:
        return fn(**kwargs)
    except Exception as exc:
        error = exc
    if torch.get_default_device().type == "meta":
        # Validation builds on the meta device; a callable that cannot (it reads a tensor's values
        # while building, say) is built once on the CPU instead of being refused, its random draws
        # leaving the run's streams as they were.
        try:
            with torch.device("cpu"), torch.random.fork_rng(devices=[]):
                return fn(**kwargs)
        except Exception as exc:
            error = exc
    raise ConfigError(f"{_describe_call(cfg, kwargs)} raised {type(error).__name__}: {_one_line(error)}; "
                      "model.kwargs must be keyword arguments the callable accepts")


def growable_names(cfg, model: nn.Module) -> list[str]:
    """model.growable, each name checked; null: the model's own growable_weights() if it declares
    them, else every Conv2d and Linear weight."""
    if cfg.growable is None:
        try:
            return growable_weight_names(model)
        except ValueError as exc:  # its own list names a parameter it does not have
            raise ConfigError(f"model.target={cfg.target}: {_one_line(exc)}; set model.growable to its growable "
                              "parameters' names") from None
    names = [str(n) for n in cfg.growable]
    params = dict(model.named_parameters())
    for n in names:
        if n not in params:
            valid = linear_and_conv_weights(model) or list(params)
            close = difflib.get_close_matches(n, list(params), n=3)
            shown = close or valid[:4] + (["..."] if len(valid) > 4 else [])
            raise ConfigError(
                f"model.growable names {n!r}, not a parameter of {type(model).__name__} (model.target={cfg.target}): "
                f"valid are parameter names such as {shown} ({len(valid)} Conv2d and Linear weights in all)")
    return names


# --- checks before anything runs ------------------------------------------------------------------


def _output_problem(cfg, model: nn.Module, shape: tuple[int, ...], num_classes: int) -> str | None:
    """The model's output on a batch of two of the dataset's inputs, in training and in eval mode
    (training steps and evaluation both need one tensor of (N, num_classes) logits)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros((2, *shape), device=device)
    call = _describe_call(cfg, call_arguments(cfg, resolve_target(cfg.target), num_classes))
    for training in (True, False):
        model.train(training)
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as exc:
            return (f"{call} cannot take the dataset's inputs of shape {tuple(x.shape)}: {type(exc).__name__}: "
                    f"{_one_line(exc)}; it must map (N, *input_shape) to (N, {num_classes}) logits")
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
            return (f"{call} returns {got} in {'training' if training else 'eval'} mode for inputs of shape "
                    f"{tuple(x.shape)}; the dataset needs one tensor of logits of shape (N, {num_classes}): set the "
                    "class count in model.kwargs (e.g. num_classes) or choose a callable that returns such logits")
    return None


def graph_needed_by(cfg) -> tuple[str, str] | None:
    """(what in this run traces the model's layer graph, what to do instead), or None when nothing
    does: the PHEW seed of a growth method and the PHEW baseline walk the graph."""
    from growth.grow import GrowthRun
    from growth.kinds import METHODS

    if cfg.method.name not in METHODS:
        return None
    if issubclass(METHODS.get(cfg.method.name), GrowthRun) and cfg.growth.seed_builder == "phew":
        return "growth.seed_builder=phew (the seed's random walks)", "use growth.seed_builder=random"
    if cfg.method.name == "phew":
        return "method=phew (its random walks)", "choose another method"
    return None


def _trace_problem(cfg, model: nn.Module, shape: tuple[int, ...], user: str, instead: str) -> str | None:
    from growth.topology import UnsupportedTopologyError, layer_graph

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        layer_graph(model, torch.zeros((1, *shape), device=device))
    except UnsupportedTopologyError as exc:
        return (f"model.target={cfg.target} cannot be traced into a graph of growable layers, which {user} needs: "
                f"{_one_line(exc)}; {instead}, or a model the tracer follows (docs/extending.md, \"Your own model\")")
    except Exception as exc:
        return (f"model.target={cfg.target}: tracing its layer graph, which {user} needs, raised "
                f"{type(exc).__name__}: {_one_line(exc)}; {instead}")
    return None


def _model_problems(cfg, model: nn.Module, input_shape, num_classes: int) -> str | None:
    problem = _output_problem(cfg.model, model, input_shape, num_classes)
    if problem is None:
        needed_by = graph_needed_by(cfg)
        problem = _trace_problem(cfg.model, model, input_shape, *needed_by) if needed_by else None
    return problem


def custom_model_problems(cfg) -> list[str]:
    """Everything that can be checked of a custom model before a run: the target, the call, the
    growable list, the output shape and, when the run traces it, the layer graph. Each on the meta
    device first (no memory); a problem found there is confirmed on a CPU build, so an operation
    that the meta device lacks is never reported as the model's."""
    from growth.config.validation import field_problems
    from growth.data import dataset_shape
    from growth.kinds import DATASETS

    if field_problems(cfg.model, "model") or cfg.dataset.name not in DATASETS:
        return []  # the field checks say what model.target and model.growable must be
    shape = dataset_shape(cfg.dataset)
    try:
        if shape is None:  # the class count is known once the files are read: the run checks the rest
            resolve_target(cfg.model.target)
            return []
        input_shape, num_classes = tuple(int(s) for s in shape[0]), int(shape[1])
        with torch.device("meta"):
            model = build_custom(cfg.model, input_shape, num_classes)
        if _model_problems(cfg, model, input_shape, num_classes) is None:
            return []
        with torch.random.fork_rng(devices=[]):  # the CPU build's random draws leave no trace
            model = build_custom(cfg.model, input_shape, num_classes)
    except ConfigError as exc:
        return [str(exc)]
    problem = _model_problems(cfg, model, input_shape, num_classes)
    return [problem] if problem else []


@MODELS.register("custom", schema=CustomModelConfig, validate=custom_model_problems)
def build_custom(cfg, input_shape, num_classes) -> nn.Module:
    if not _is_import_path(cfg.target):
        raise ConfigError(f"model.target={cfg.target!r} is invalid: {TARGET_VALID}")
    fn = resolve_target(str(cfg.target))
    kwargs = call_arguments(cfg, fn, num_classes)
    model = _call(cfg, fn, kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{_describe_call(cfg, kwargs)} returned an object of type {type(model).__name__}, "
                          f"not a torch.nn.Module: it must be {TARGET_VALID}")
    model.growable_weights = GrowableWeights(growable_names(cfg, model))
    return model
