"""Model registry: name -> builder(model_cfg, input_shape, num_classes) -> nn.Module.

| name | model | schema (conf/model/<name>.yaml) |
|---|---|---|
| ``mlp`` | MLP with ``hidden`` widths | ``mlp_schema`` (growth.config.MLPConfig) |
| ``lenet300`` | LeNet-300-100 | ``lenet300_schema`` |
| ``convnet`` | conv32-conv64-pool-fc128-fc for MNIST-like images | ``convnet_schema`` |
| ``resnet20/32/56/110`` | CIFAR ResNets (He et al. 2016, 4.2) | ``cifar_resnet_schema``: ``depth``, ``shortcut`` |
| ``resnet18`` | ResNet-18 with a 3x3 stride-1 stem and no max pool, for 64x64 | ``resnet18_schema`` |
| ``resnet50`` | torchvision's ResNet-50 | ``resnet50_schema`` |
| ``vit`` | small ViT for 64x64 (patch 8, width 256, depth 6, 8 heads) | ``vit_schema`` |

Every model is a plain ``nn.Module`` (it pickles), takes inputs of shape (N, *input_shape) and
lists its growable weights with ``growable_weights()`` (every Linear and Conv2d weight; no model
excludes any). Image models take their input channels from ``input_shape``; a builder raises
ConfigError when the input cannot fit the model. The CIFAR ResNets share one schema: ``depth`` must
be the one the name says (a contradiction is a ConfigError, so a run's record never shows a
ResNet-56 named resnet20), ``shortcut`` is A (default) or B.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from growth.errors import ConfigError
from growth.models.mlp import MLP
from growth.models.resnet import ResNet18Config, ResNet50Config, build_resnet18, build_resnet50
from growth.models.resnet_cifar import DEPTHS, CifarResNetConfig, build_cifar_resnet
from growth.models.small import ConvNetConfig, LeNet300Config, build_convnet, build_lenet300
from growth.models.vit import ViTConfig, build_vit


def build_mlp(cfg, input_shape, num_classes) -> nn.Module:
    return MLP(input_shape, num_classes, hidden=list(cfg.hidden))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": build_mlp,
    "lenet300": build_lenet300,
    "convnet": build_convnet,
    **{name: build_cifar_resnet for name in DEPTHS},
    "resnet18": build_resnet18,
    "resnet50": build_resnet50,
    "vit": build_vit,
}

# schema name in the config store -> dataclass (mlp_schema is stored by growth.config)
SCHEMAS = {
    "lenet300_schema": LeNet300Config,
    "convnet_schema": ConvNetConfig,
    "cifar_resnet_schema": CifarResNetConfig,
    "resnet18_schema": ResNet18Config,
    "resnet50_schema": ResNet50Config,
    "vit_schema": ViTConfig,
}


def register_model_schemas(cs) -> None:
    """Store the schema of every model option (a subclass of growth.config.ModelConfig)."""
    for name, node in SCHEMAS.items():
        cs.store(group="model", name=name, node=node)


def build_model(cfg, input_shape, num_classes) -> nn.Module:
    try:
        builder = MODELS[cfg.name]
    except KeyError:
        raise ConfigError(f"model.name={cfg.name!r} is unknown: valid are {sorted(MODELS)}") from None
    return builder(cfg, tuple(input_shape), int(num_classes))
