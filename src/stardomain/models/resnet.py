"""CIFAR ResNets (He et al. 2016): ResNet-20 and the CIFAR variant of ResNet-18.

Residual connections add a permutation constraint (both branches share one hidden-unit
order), which is why these networks are part of the study.
"""

from __future__ import annotations

from torch import Tensor, nn

from stardomain.models.entry import check
from stardomain.models.registry import register, scaled


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU.

    The shortcut is a 1x1 conv + BN whenever stride or channel count changes (option B),
    otherwise identity. The residual is a non-inplace ``+`` so fx sees an ``add`` node.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # None (not nn.Identity) for the identity shortcut keeps the traced graph free of
        # pass-through modules; the branch below is fixed at construction, not data-dependent.
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + residual)


class CifarResNet(nn.Module):
    """3x3 stem (no max-pool), stages of BasicBlocks, global average pool, Linear.

    ``imagenet_stem`` swaps in the ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool): on
    224-pixel images the CIFAR stem would run every stage at 16x the resolution (and cost).
    """

    def __init__(
        self, in_channels: int, num_classes: int, stem: int, stages: list[tuple[int, int, int]], imagenet_stem: bool = False
    ) -> None:
        """``stages`` lists (channels, blocks, first stride) per stage."""
        super().__init__()
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet_stem else None
        channels = stem
        layers = []
        for out, blocks, stride in stages:
            stage = []
            for i in range(blocks):
                stage.append(BasicBlock(channels, out, stride if i == 0 else 1))
                channels = out
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:  # fixed at construction, so fx traces one graph
            x = self.maxpool(x)
        return self.fc(self.flatten(self.pool(self.layers(x))))


@register("resnet20", in_dims=3, summary="CIFAR ResNet-20, 16/32/64 x width channels, ~0.27M params at width 1")
def build_resnet20(num_classes: int, in_shape: tuple[int, int, int], *, width: float = 1) -> nn.Module:
    """ResNet-20: 3 stages x 3 BasicBlocks (6n+2 with n=3)."""
    check(width > 0, f"resnet20 option width must be a positive multiplier, got {width}")
    c = [scaled(16, width), scaled(32, width), scaled(64, width)]
    return CifarResNet(in_shape[0], num_classes, c[0], [(c[0], 3, 1), (c[1], 3, 2), (c[2], 3, 2)])


def _resnet18(in_shape: tuple[int, int, int], num_classes: int, width: float, imagenet_stem: bool) -> nn.Module:
    check(width > 0, f"resnet18 option width must be a positive multiplier, got {width}")
    c = [scaled(n, width) for n in (64, 128, 256, 512)]
    return CifarResNet(
        in_shape[0], num_classes, c[0], [(c[0], 2, 1), (c[1], 2, 2), (c[2], 2, 2), (c[3], 2, 2)], imagenet_stem=imagenet_stem
    )


@register("resnet18", in_dims=3, summary="ResNet-18 CIFAR variant, 64..512 x width channels, ~11.17M params")
def build_resnet18(num_classes: int, in_shape: tuple[int, int, int], *, width: float = 1) -> nn.Module:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool (the usual CIFAR adaptation)."""
    return _resnet18(in_shape, num_classes, width, imagenet_stem=False)


@register(
    "resnet18_imagenet",
    in_dims=3,
    summary="ResNet-18 of He et al. for ImageNet-sized inputs (7x7/2 stem + max-pool), ~11.69M params at 1000 classes",
)
def build_resnet18_imagenet(num_classes: int, in_shape: tuple[int, int, int], *, width: float = 1) -> nn.Module:
    """torchvision's resnet18 layout: the stem downsamples 4x, so 224-pixel inputs cost what 56-pixel ones do."""
    return _resnet18(in_shape, num_classes, width, imagenet_stem=True)
