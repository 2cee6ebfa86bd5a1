"""Model registry: name -> builder(model_cfg, input_shape, num_classes) -> nn.Module."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from growth.errors import ConfigError
from growth.models.mlp import MLP


def build_mlp(cfg, input_shape, num_classes) -> nn.Module:
    return MLP(input_shape, num_classes, hidden=list(cfg.hidden))


MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": build_mlp}


def register_model_schemas(cs) -> None:
    """Store the schema of every model option (a subclass of growth.config.ModelConfig)."""


def build_model(cfg, input_shape, num_classes) -> nn.Module:
    try:
        builder = MODELS[cfg.name]
    except KeyError:
        raise ConfigError(f"model.name={cfg.name!r} is unknown: valid are {sorted(MODELS)}") from None
    return builder(cfg, tuple(input_shape), int(num_classes))
