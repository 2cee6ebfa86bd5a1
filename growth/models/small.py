"""Small models for MNIST-like data: LeNet-300-100 and a two-conv net.

``lenet300``: LeNet-300-100 (LeCun et al. 1998), the MLP 784-300-100-10 with ReLU, on inputs
flattened whatever their shape ((1, 28, 28), (28, 28) or (784,)); another input size or class
count changes only the first and last layer. PyTorch's default Linear init.

``convnet``: conv 3x3 32 - ReLU - conv 3x3 64 - ReLU - max pool 2 - flatten - fc 128 - ReLU - fc
(no padding, no dropout): on 1x28x28 that is 28 -> 26 -> 24 -> 12, so the first fc reads
64*12*12 = 9216 features; about 1.2M parameters. It needs images of at least 6x6. PyTorch's
default init. The pool is an ``nn.MaxPool2d`` module, which PWMP scoring reads as average pooling.

Growable weights: every conv and linear weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from growth.config import ModelConfig
from growth.errors import ConfigError
from growth.kinds import MODELS
from growth.models.common import check_classes, image_shape, linear_and_conv_weights, model_name
from growth.models.mlp import MLP


@dataclass
class LeNet300Config(ModelConfig):
    name: str = model_name("lenet300")


@dataclass
class ConvNetConfig(ModelConfig):
    name: str = model_name("convnet")


class LeNet300(MLP):
    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10):
        super().__init__(input_shape, num_classes, hidden=(300, 100))


class ConvNet(nn.Module):
    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        self.conv1 = nn.Conv2d(c, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), 128)
        self.fc2 = nn.Linear(128, num_classes)

    def growable_weights(self) -> list[str]:
        return linear_and_conv_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


@MODELS.register("lenet300", schema=LeNet300Config)
def build_lenet300(cfg, input_shape, num_classes) -> LeNet300:
    if not input_shape or min(int(s) for s in input_shape) < 1:
        raise ConfigError(f"model.name={cfg.name} needs a non-empty input, got input_shape {tuple(input_shape)}")
    return LeNet300(input_shape, check_classes(cfg.name, num_classes))


@MODELS.register("convnet", schema=ConvNetConfig)
def build_convnet(cfg, input_shape, num_classes) -> ConvNet:
    c, h, w = image_shape(cfg.name, input_shape, "e.g. (1, 28, 28) for MNIST")
    if h < 6 or w < 6:
        raise ConfigError(
            f"model.name={cfg.name} needs images of at least 6x6 (two 3x3 convs and a 2x2 pool), got {h}x{w}"
        )
    return ConvNet((c, h, w), check_classes(cfg.name, num_classes))
