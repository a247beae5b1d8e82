"""Wide ResNet (Zagoruyko & Komodakis 2016): width is the knob that lowers barriers."""

from __future__ import annotations

from torch import Tensor, nn

from stardomain.models.entry import check
from stardomain.models.registry import register


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus shortcut.

    When the shape changes, the shortcut is a 1x1 conv applied to the *pre-activated*
    input (as in the reference implementation); otherwise the raw input is added.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        # Optional parts are None rather than nn.Identity so the traced graph holds only
        # real layers; the branches below are fixed at construction and resolved by fx.
        self.dropout: nn.Dropout | None = nn.Dropout(dropout) if dropout > 0 else None
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        hidden = self.relu2(self.bn2(self.conv1(pre)))
        if self.dropout is not None:
            hidden = self.dropout(hidden)
        out = self.conv2(hidden)
        residual = x if self.shortcut is None else self.shortcut(pre)
        return out + residual


class WideResNet(nn.Module):
    """conv3x3(16) stem, 3 groups of n WideBlocks (16k/32k/64k), BN-ReLU, avg pool, Linear."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, widen: int, dropout: float) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        channels = 16
        groups = []
        for out, stride in zip(widths, (1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(WideBlock(channels, out, stride if i == 0 else 1, dropout))
                channels = out
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn(self.groups(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))


@register("wrn", in_dims=3, summary="WideResNet-depth-width (default WRN-16-4, ~2.75M params), depth = 6n+4")
def build_wrn(num_classes: int, in_shape: tuple[int, int, int], *, depth: int = 16, width: int = 4, dropout: float = 0.0) -> nn.Module:
    """WRN-d-k with pre-activation blocks and no dropout by default."""
    check(depth >= 10 and (depth - 4) % 6 == 0, f"wrn option depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
    check(width >= 1, f"wrn option width (widen factor) must be >= 1, got {width}")
    check(0.0 <= dropout < 1.0, f"wrn option dropout must be in [0, 1), got {dropout}")
    return WideResNet(in_shape[0], num_classes, depth, width, dropout)
