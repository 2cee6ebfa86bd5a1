"""CIFAR ResNets of He et al. 2016, section 4.2 (ResNet-20/32/56/110).

A 3x3 conv with 16 filters, then three stages of n basic blocks with 16, 32 and 64 filters on
32x32, 16x16 and 8x8 maps (the first block of stages 2 and 3 has stride 2), global average
pooling and a linear classifier: depth 6n + 2. Every conv is followed by BatchNorm.

Shortcuts where the shape changes:

- ``A`` (the paper's CIFAR choice, default): parameter-free; subsample the input with stride 2
  (``x[:, :, ::2, ::2]``) and zero-pad the new channels, half before and half after the old ones
  (as the reference implementation whose accuracies METHOD.md cites).
- ``B``: a 1x1 conv projection with the block's stride, followed by BatchNorm.

Initialisation follows that reference implementation: He (Kaiming) normal, fan-in, on every conv
and linear weight; BatchNorm gamma 1, beta 0.

Growable weights: every conv and linear weight, option-B projections included; BatchNorm gammas
are per-channel scales, not edges.
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
from growth.models.common import StagedResNet, check_classes, image_shape

SHORTCUTS = ("A", "B")
DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet56": 56, "resnet110": 110}


@dataclass
class CifarResNetConfig(ModelConfig):
    # One schema for resnet20/32/56/110 (each stores it as <name>_schema): depth must be the one
    # the name says (checked when built).
    depth: int = 20
    # A: parameter-free (subsample + zero-pad channels); B: 1x1 conv + BatchNorm projection.
    shortcut: str = "A"


class PadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad channels (no parameters)."""

    def __init__(self, stride: int, pad_before: int, pad_after: int):
        super().__init__()
        self.stride = int(stride)
        self.pad_before = int(pad_before)
        self.pad_after = int(pad_after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_before or self.pad_after:
            x = F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


def projection(in_planes: int, planes: int, stride: int) -> nn.Module:
    """Option B: 1x1 conv with the block's stride, then BatchNorm."""
    return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            if planes < in_planes:
                raise ValueError(f"option-A shortcuts cannot reduce channels ({in_planes} -> {planes})")
            extra = planes - in_planes
            self.shortcut = PadShortcut(stride, extra // 2, extra - extra // 2)
        elif shortcut == "B":
            self.shortcut = projection(in_planes, planes, stride)
        else:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(StagedResNet):
    """Stem conv, stages of basic blocks (stride 2 at every stage but the first), pool, linear.

    ``widths`` and ``blocks`` default to the paper's (16, 32, 64) and n blocks per stage; other
    values give the same family at other sizes (tests use tiny ones).
    """

    def __init__(
        self,
        blocks: int | Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        shortcut: str = "A",
    ):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        widths = [int(w) for w in widths]
        per_stage = [int(blocks)] * len(widths) if isinstance(blocks, int) else [int(b) for b in blocks]
        if len(per_stage) != len(widths) or min(per_stage) < 1:
            raise ValueError(f"blocks {blocks!r} must give at least one block for each of the {len(widths)} stages")
        self.shortcut_type = shortcut
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, per_stage)):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        # layer1, layer2, ... as attributes, so parameter names read like the reference's
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"layer{i}", stage)
        self.num_stages = len(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)


def build_cifar_resnet(cfg, input_shape, num_classes) -> CifarResNet:
    name = cfg.name
    depth = int(cfg.depth)
    if DEPTHS.get(name) != depth:
        raise ConfigError(
            f"model.depth={depth} contradicts model.name={name}: {name} has depth {DEPTHS.get(name)} "
            f"(names and depths: {DEPTHS})"
        )
    if cfg.shortcut not in SHORTCUTS:
        raise ConfigError(f"model.shortcut={cfg.shortcut!r} is invalid: one of {list(SHORTCUTS)} (model.name={name})")
    channels, _, _ = image_shape(name, input_shape, "e.g. (3, 32, 32) for CIFAR; any channel count and size")
    return CifarResNet((depth - 2) // 6, check_classes(name, num_classes), channels, shortcut=cfg.shortcut)


# One entry per depth, all four sharing the schema and the builder.
for _name, _depth in DEPTHS.items():
    MODELS.add(_name, build_cifar_resnet, schema=CifarResNetConfig, depth=_depth)
