"""Fully connected network, the simplest setting in which the star domain conjecture is tested."""

from __future__ import annotations

import math

from torch import Tensor, nn

from stardomain.models.entry import check
from stardomain.models.registry import register


class MLP(nn.Module):
    """Flatten -> ``depth`` x [Linear -> (BatchNorm1d) -> ReLU] -> Linear.

    Hidden layers are separate named children (``layers.{i}``) so permutation tracing sees
    one Linear/BN/ReLU chain per hidden unit group.
    """

    def __init__(self, in_features: int, num_classes: int, depth: int, width: int, batchnorm: bool) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = []
        features = in_features
        for _ in range(depth):
            # A bias before BatchNorm is redundant, so it is dropped there.
            layers.append(nn.Linear(features, width, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            features = width
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.layers(self.flatten(x)))


@register("mlp", summary="MLP: depth hidden layers of `width` units (784-512-512-512-10 on MNIST)")
def build_mlp(num_classes: int, in_shape: tuple[int, ...], *, depth: int = 3, width: int = 512, batchnorm: bool = False) -> nn.Module:
    """Multi-layer perceptron on flattened inputs."""
    check(depth >= 0, f"mlp option depth must be >= 0 hidden layers, got {depth}")
    check(width >= 1, f"mlp option width must be >= 1 unit, got {width}")
    return MLP(math.prod(in_shape), num_classes, depth, width, batchnorm)
