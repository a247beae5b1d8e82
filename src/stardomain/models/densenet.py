"""DenseNet (Huang et al. 2017): concatenation-based skips, a different permutation structure."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stardomain.models.entry import check
from stardomain.models.registry import register


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` maps, concatenated onto its input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (compression 1: channels kept) then 2x2 average pool."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNet(nn.Module):
    """Basic DenseNet (no bottleneck, no compression): 16-channel stem, 3 dense blocks."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, growth: int) -> None:
        super().__init__()
        per_block = (depth - 4) // 3
        channels = 16  # the paper's stem width for DenseNets without bottleneck
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for b in range(3):
            for _ in range(per_block):
                stages.append(DenseLayer(channels, growth))
                channels += growth
            if b < 2:
                stages.append(Transition(channels))
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))


@register("densenet40_12", min_hw=4, in_dims=3, summary="DenseNet-40-12 (~1.02M params); needs inputs >= 4x4")
def build_densenet40_12(num_classes: int, in_shape: tuple[int, int, int], *, growth: int = 12, depth: int = 40) -> nn.Module:
    """DenseNet-L-k; two 2x2 average-pool transitions, so H and W must be at least 4."""
    check(depth >= 7 and (depth - 4) % 3 == 0, f"densenet option depth must be 3n+4 with n >= 1 (e.g. 40, 100), got {depth}")
    check(growth >= 1, f"densenet option growth must be >= 1, got {growth}")
    return DenseNet(in_shape[0], num_classes, depth, growth)
