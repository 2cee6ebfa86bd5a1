"""Models: every one registered on growth.kinds.MODELS (``model.name``) in the module that
defines it, as a builder ``(model_cfg, input_shape, num_classes) -> nn.Module`` with its schema, a
subclass of growth.config.ModelConfig that Hydra stores as ``<name>_schema``
(conf/model/<name>.yaml names it in its defaults). The registry finds the models by importing
this package's modules, so a new model is one new module here plus one yaml.

| name | model | module | schema |
|---|---|---|---|
| ``mlp`` | MLP with ``hidden`` widths | mlp | ``MLPConfig``: ``hidden`` |
| ``lenet300`` | LeNet-300-100 | small | ``LeNet300Config`` |
| ``convnet`` | conv32-conv64-pool-fc128-fc for MNIST-like images | small | ``ConvNetConfig`` |
| ``resnet20/32/56/110`` | CIFAR ResNets (He et al. 2016, 4.2) | resnet_cifar | ``CifarResNetConfig``: ``depth``, ``shortcut`` |
| ``resnet18`` | ResNet-18 with a 3x3 stride-1 stem and no max pool, for 64x64 | resnet | ``ResNet18Config`` |
| ``resnet50`` | torchvision's ResNet-50 | resnet | ``ResNet50Config`` |
| ``vit`` | small ViT for 64x64 (patch 8, width 256, depth 6, 8 heads) | vit | ``ViTConfig`` |
| ``custom`` | any ``nn.Module`` by import path, e.g. ``torchvision.models.resnet18`` | custom | ``CustomModelConfig``: ``target``, ``kwargs``, ``growable`` |

Every model is a plain ``nn.Module`` (it pickles), takes inputs of shape (N, *input_shape) and
lists its growable weights with ``growable_weights()`` (every Linear and Conv2d weight; only a
``custom`` model given ``model.growable`` excludes any). The built-in image models take their
input channels from ``input_shape``. The CIFAR ResNets share one schema: ``depth`` must be the
one the name says (a contradiction is a ConfigError, so a run's record never shows a ResNet-56
named resnet20), ``shortcut`` is A (default) or B.

A model's checks live in its builder, which raises ConfigError when the settings or the input
cannot fit the model: most need the dataset's input shape, and validation builds the selected
model on the meta device against it (growth.config.validation), so each problem is found once,
with one message. The entries therefore carry no validator of their own, except ``custom``: its
validator also checks the output shape on the dataset's inputs and, when the run walks the layer
graph (a PHEW seed, ``method=phew``), that the tracer follows the model (docs/extending.md, "Your
own model").
"""

from __future__ import annotations

from torch import nn

from growth.kinds import MODELS


def build_model(cfg, input_shape, num_classes) -> nn.Module:
    """The model `cfg.name` names (an unknown name is the registry's ConfigError, naming the valid ones)."""
    builder = MODELS.get(cfg.name)
    return builder(cfg, tuple(input_shape), int(num_classes))


__all__ = ["MODELS", "build_model"]


def build_on_meta(model_cfg, dataset_cfg) -> nn.Module | None:
    """The model `model_cfg` names for the dataset `dataset_cfg` describes, built on the meta
    device (no memory, no random draws), or None when the dataset's shape is known only once its
    files are read. Raises what building raises (a ConfigError when the model does not fit)."""
    import torch

    from growth.data import dataset_shape

    shape = dataset_shape(dataset_cfg)
    if shape is None:
        return None
    with torch.device("meta"):
        return build_model(model_cfg, *shape)
