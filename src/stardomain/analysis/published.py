"""The paper authors' own published numbers that stardomain's results are compared with.

Kept as data in one place, with where they come from, so a figure or README table that shows
them beside our results never retypes them. These are *their* numbers on *their* data: compare
the shape of a trend with ours, not the values (our width study runs on Fashion-MNIST).
"""

from __future__ import annotations

__all__ = ["MNIST_MLP_WIDTH", "MNIST_MLP_WIDTH_SOURCE", "WIDTH_GROUPS"]

WIDTH_GROUPS = ("regular-regular", "star-source", "star-held-out")

# width -> mean test-loss barrier (nats) per group, 1-hidden-layer MLPs on MNIST
MNIST_MLP_WIDTH: dict[int, dict[str, float]] = {
    4: {"regular-regular": 0.352, "star-source": 0.148, "star-held-out": 0.084},
    8: {"regular-regular": 0.211, "star-source": 0.033, "star-held-out": 0.086},
    16: {"regular-regular": 0.212, "star-source": 0.009, "star-held-out": 0.064},
    32: {"regular-regular": 0.139, "star-source": 0.000, "star-held-out": 0.022},
    64: {"regular-regular": 0.033, "star-source": 0.001, "star-held-out": 0.006},
    128: {"regular-regular": 0.010, "star-source": 0.000, "star-held-out": 0.002},
    256: {"regular-regular": 0.003, "star-source": 0.000, "star-held-out": 0.000},
}
MNIST_MLP_WIDTH_SOURCE = (
    "the authors' MNIST width study (paper v2 Fig. 2; 1-hidden-layer MLPs, test-loss barriers), as quoted in stardomain issue 18"
)
