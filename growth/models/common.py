"""Helpers shared by the model modules: the schemas' name field, growable-weight listing and
input checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from growth.config.checks import key, registered
from growth.errors import ConfigError


def model_name(default: str):
    """The ``name`` field of a model's schema: its default, still checked against the registry
    (a subclass that sets a default replaces the base field, and with it the base field's check)."""
    return key(default, registered("model"))


def linear_and_conv_weights(model: nn.Module) -> list[str]:
    """Names of every Linear and Conv2d weight, in registration order."""
    return [
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
    ]


def image_shape(name: str, input_shape: Sequence[int], expected: str) -> tuple[int, int, int]:
    """(C, H, W) of an image input, or a ConfigError naming the model and what it expects."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"model.name={name} needs image inputs of shape (channels, height, width), {expected}; "
            f"the dataset gives input_shape {shape}"
        )
    return shape  # type: ignore[return-value]


def check_classes(name: str, num_classes: int) -> int:
    if int(num_classes) < 1:
        raise ConfigError(f"model.name={name} needs at least one class, got num_classes={num_classes}")
    return int(num_classes)


class StagedResNet(nn.Module):
    """The forward pass the CIFAR ResNets and ResNet-18 share: conv1 -> bn1 -> ReLU -> stages
    layer1..layerN -> pool -> flatten -> fc. Subclasses build those modules and set num_stages."""

    num_stages: int

    def growable_weights(self) -> list[str]:
        return linear_and_conv_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))
