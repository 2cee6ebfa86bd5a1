"""ImageNet-family ResNets: ResNet-18 adapted to 64x64 inputs, and torchvision's ResNet-50.

ResNet-18 for TinyImageNet (64x64). The ImageNet stem (7x7 conv with stride 2, then 3x3 max pool
with stride 2) would shrink a 64x64 image to 16x16 before the first stage and to 2x2 before the
pool. Adaptation: the stem is one 3x3 conv, stride 1, padding 1, 64 filters, BatchNorm, ReLU, and
there is no max pool. Everything else is torchvision's ResNet-18: BasicBlocks [2, 2, 2, 2] with 64,
128, 256, 512 filters, stride 2 at the first block of stages 2-4 (maps 64, 32, 16, 8), 1x1 conv +
BatchNorm projections where the shape changes, global average pool, linear classifier; He normal
(fan-out) init for convs, BatchNorm gamma 1, beta 0. 11.27M parameters with 200 classes; 2.2G
multiply-adds (4.4 GFLOPs) per 64x64 image forward, four times the 32x32 CIFAR ResNet-18's.

ResNet-50: ``torchvision.models.resnet50(weights=None, num_classes=...)`` itself (subclassed,
not re-implemented, so parameter names and state dicts are torchvision's); only the stem conv is
swapped for one with the dataset's channel count when it is not 3.

Growable weights of both: every conv and linear weight, projections included.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from growth.config import ModelConfig
from growth.kinds import MODELS
from growth.models.common import StagedResNet, check_classes, image_shape, linear_and_conv_weights, model_name
from growth.models.resnet_cifar import BasicBlock


@dataclass
class ResNet18Config(ModelConfig):
    name: str = model_name("resnet18")


@dataclass
class ResNet50Config(ModelConfig):
    name: str = model_name("resnet50")


class ResNet18(StagedResNet):
    def __init__(self, num_classes: int = 200, in_channels: int = 3, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, stride if j == 0 else 1, shortcut="B"))
                in_planes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.num_stages = len(widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ResNet50(ResNet):
    """torchvision's ResNet-50 (Bottleneck, [3, 4, 6, 3]) with its own init and names."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def growable_weights(self) -> list[str]:
        return linear_and_conv_weights(self)


@MODELS.register("resnet18", schema=ResNet18Config)
def build_resnet18(cfg, input_shape, num_classes) -> ResNet18:
    channels, _, _ = image_shape(cfg.name, input_shape, "e.g. (3, 64, 64) for TinyImageNet")
    return ResNet18(check_classes(cfg.name, num_classes), channels)


@MODELS.register("resnet50", schema=ResNet50Config)
def build_resnet50(cfg, input_shape, num_classes) -> ResNet50:
    channels, _, _ = image_shape(cfg.name, input_shape, "e.g. (3, 224, 224) for ImageNet")
    return ResNet50(check_classes(cfg.name, num_classes), channels)
