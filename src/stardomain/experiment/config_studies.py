"""The ``studies`` block of the experiment YAML: which studies run, each with its own settings.

Re-exported by :mod:`stardomain.experiment.config`; the values are checked there, against the rest of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BMAStudy", "FusionStudy", "NSourcesStudy", "OptimizerStudy", "RecipeStudy", "Studies", "WidthDepthStudy"]


@dataclass
class NSourcesStudy:
    sizes: list[int] = field(default_factory=lambda: [2, 5, 10])


@dataclass
class BMAStudy:
    max_samples: int = 20
    seed: int = 0


@dataclass
class FusionStudy:
    sizes: list[int] = field(default_factory=lambda: [2, 5, 10])
    mu: float = 1.0


@dataclass
class WidthDepthStudy:
    """Barriers across sizes: each entry is a dict of model options (e.g. {width: 8}); counts kept small."""

    settings: list[dict] = field(default_factory=list)
    sources: int = 4
    held_out: int = 2


@dataclass
class OptimizerStudy:
    optimizer: str = "adam"
    recipe: dict = field(default_factory=dict)  # overrides of the source recipe for this optimizer
    star_recipe: dict = field(default_factory=dict)  # overrides for this study's star (star.recipe never applies here)
    sources: int = 4
    held_out: int = 2


@dataclass
class RecipeStudy:
    """When does a star exist? The core barrier study over a grid of training recipes: epochs x init x
    optimizer x lr x weight decay (x width). Every cell is a setting of its own (zoo, stars, pairs); its
    convergence is recorded."""

    epochs: list[int] = field(default_factory=list)  # empty: the main recipe's epochs only
    init: list[str] = field(default_factory=list)  # empty: model.init only
    optimizer: list[str] = field(default_factory=list)  # empty: the main recipe's; another gets its default lr/nesterov
    lr: list[float] = field(default_factory=list)  # empty: the main recipe's lr (another optimizer: that one's default)
    weight_decay: list[float] = field(default_factory=list)  # empty: the main recipe's weight decay only
    width: list[float] = field(default_factory=list)  # model option `width`; empty: the main model's
    sources: int = 4
    held_out: int = 2


@dataclass
class Studies:
    barriers: bool = True
    distances: bool = True
    n_sources: NSourcesStudy | None = None
    bma: BMAStudy | None = None
    fusion: FusionStudy | None = None
    width_depth: WidthDepthStudy | None = None
    optimizer: OptimizerStudy | None = None
    recipe: RecipeStudy | None = None
