"""``mlp``: a multilayer perceptron for flat or image inputs (flattened), ReLU between its
Linear layers of ``hidden`` widths. PyTorch's default Linear init.

Growable weights: every Linear weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from growth.config import ModelConfig
from growth.config.checks import at_least, each, key
from growth.kinds import MODELS
from growth.models.common import model_name


@dataclass
class MLPConfig(ModelConfig):
    name: str = model_name("mlp")
    # Hidden widths; [] is a linear classifier.
    hidden: list[int] = key(None, each(at_least(1), "a list of widths, each at least 1"), factory=lambda: [100, 100])


class MLP(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (100, 100)):
        super().__init__()
        in_features = int(math.prod(input_shape))
        widths = [in_features, *[int(h) for h in hidden], int(num_classes)]
        self.flatten = nn.Flatten()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = nn.ReLU()

    def growable_weights(self) -> list[str]:
        return [f"layers.{i}.weight" for i in range(len(self.layers))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


@MODELS.register("mlp", schema=MLPConfig)
def build_mlp(cfg, input_shape, num_classes) -> MLP:
    return MLP(input_shape, num_classes, hidden=list(cfg.hidden))
