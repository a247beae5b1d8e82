"""CIFAR-style VGG: plain conv stacks, the architectures where barriers are largest."""

from __future__ import annotations

from torch import Tensor, nn

from stardomain.models.entry import check
from stardomain.models.registry import register, scaled

# Numbers are conv output channels, "M" a 2x2 max-pool (Simonyan & Zisserman configs A, D, E).
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """Conv3x3 -> (BN) -> ReLU blocks with max-pools, global average pool, one Linear.

    Max-pools that would act on a 1-pixel-wide map are left out at construction time, and
    the global average pool makes the classifier input 512*w for any input size, so
    ``forward`` has no shape-dependent branches (fx-traceable).
    """

    def __init__(self, config: list[int | str], num_classes: int, in_shape: tuple[int, int, int], batchnorm: bool, width: float) -> None:
        super().__init__()
        channels, h, w = in_shape
        layers: list[nn.Module] = []
        for item in config:
            if item == "M":
                if h >= 2 and w >= 2:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    h, w = h // 2, w // 2
                continue
            out = scaled(int(item), width)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def _vgg_builder(name: str):
    def build(num_classes: int, in_shape: tuple[int, int, int], *, batchnorm: bool = True, width: float = 1) -> nn.Module:
        check(width > 0, f"{name} option width must be a positive multiplier, got {width}")
        return VGG(CONFIGS[name], num_classes, in_shape, batchnorm, width)

    build.__name__ = f"build_{name}"
    build.__doc__ = f"{name.upper()} (CIFAR style, 64*width..512*width channels)."
    return build


for _name in CONFIGS:
    register(_name, in_dims=3, summary=f"{_name.upper()} CIFAR-style, options batchnorm (True), width multiplier (1)")(_vgg_builder(_name))
