"""Backbones whose every batch norm is a :class:`RoutedBatchNorm` (shared conv weights).

- ``small_cnn``: the digits encoder measured in DESIGN.md: four 3x3 convolutions, widths
  32/64/64/128, strides 1/2/1/2, BN + ReLU, global average pool -> 128-d features.
- ``resnet18``: CIFAR ResNet-18 as in the official ACL code: 3x3 stride-1 stem, no max-pool,
  BasicBlocks [2, 2, 2, 2] at widths 64/128/256/512 -> 512-d features.
"""

from __future__ import annotations

import torch
from torch import nn

from acl_ray.algorithm.models.routed_bn import RoutedBatchNorm


def _conv_bn(cin: int, cout: int, stride: int, routes: tuple[str, ...]) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), RoutedBatchNorm(cout, routes)]


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, routes: tuple[str, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout, stride in ((32, 1), (64, 2), (64, 1), (128, 2)):
            layers += [*_conv_bn(cin, cout, stride, routes), nn.ReLU(inplace=True)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))  # (N, 128)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, routes: tuple[str, ...]) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, stride, routes)
        self.conv2, self.bn2 = _conv_bn(cout, cout, 1, routes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), RoutedBatchNorm(cout, routes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int, routes: tuple[str, ...]) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, 64, 1, routes), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride, routes), BasicBlock(cout, cout, 1, routes)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))  # (N, 512)


def build_backbone(arch: str, in_channels: int, routes: tuple[str, ...]) -> SmallCNN | ResNet18:
    if arch == "small_cnn":
        return SmallCNN(in_channels, routes)
    if arch == "resnet18":
        return ResNet18(in_channels, routes)
    raise ValueError(f"Illegal model.arch={arch!r}: must be one of small_cnn, resnet18")
