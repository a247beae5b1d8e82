"""stardomain: test the star domain conjecture (Sonthalia et al., ICLR 2025) on real networks.

The curated API, one name per use case, along the paper's pipeline::

    import stardomain as sd
    ds = sd.load_dataset("digits")                                   # data
    paths = sd.train_zoo(ds, "mlp", {"width": 16}, sd.Recipe(epochs=60), [0, 1, 2], "zoo")   # models, zoo
    star = sd.train_star(paths, ds, sd.StarlightConfig(recipe=sd.Recipe(epochs=60)), "star.safetensors", seed=sd.star_seed(0))
    pair = sd.evaluate_pair(*(sd.load_checkpoint(p).state_dict() for p in (star.path, paths[0])),
                            model=sd.load_checkpoint(star.path), dataset=ds)      # align + curve + barriers
    results = sd.run_experiment(sd.load_config("study.yaml"), "runs/study")       # a whole study

Names resolve on first use (``import stardomain`` imports no torch), so the command line starts fast.

Units: every accuracy this API returns is a fraction in [0, 1] (0.9722), and so is every accuracy barrier
(0.05 = a drop of 5 percentage points); only what a person reads (the CLI, progress lines, report.md) shows
percent (97.22%) and pp. The convention is stated once, in the README's "Python API".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stardomain.errors import StardomainError

__version__ = "0.1.0"

# name -> (module, attribute): what `import stardomain as sd` offers, in pipeline order
_API = {
    # data and models
    "load_dataset": ("stardomain.data", "load_dataset"),
    "matching_sample": ("stardomain.data", "matching_sample"),
    "create_model": ("stardomain.models", "create"),
    "register_model": ("stardomain.models", "register"),
    # training and zoos
    "Recipe": ("stardomain.training.loop", "Recipe"),
    "default_recipe": ("stardomain.training.loop", "default_recipe"),
    "train_model": ("stardomain.training.loop", "train_model"),
    "train_zoo": ("stardomain.training.zoo", "train_zoo"),
    "load_zoo": ("stardomain.training.zoo", "load_zoo"),
    # checkpoints
    "save_checkpoint": ("stardomain.checkpoints.store", "save"),
    "load_checkpoint": ("stardomain.checkpoints.store", "load"),
    "load_state": ("stardomain.checkpoints.store", "load_state"),
    # permutations
    "trace_spec": ("stardomain.permute", "trace_spec"),
    "align": ("stardomain.permute", "align"),
    "weight_matching": ("stardomain.permute", "weight_matching"),
    "activation_matching": ("stardomain.permute", "activation_matching"),
    "apply_permutation": ("stardomain.permute", "apply_permutation"),
    # barriers
    "curve": ("stardomain.barrier", "curve"),
    "barriers": ("stardomain.barrier", "barriers"),
    "evaluate_pair": ("stardomain.barrier", "evaluate_pair"),
    "PairResult": ("stardomain.barrier", "PairResult"),
    # Starlight
    "Starlight": ("stardomain.starlight", "Starlight"),
    "StarlightConfig": ("stardomain.starlight", "StarlightConfig"),
    "StarCheckpoint": ("stardomain.starlight", "StarCheckpoint"),
    "train_star": ("stardomain.starlight", "train_star"),
    "star_seed": ("stardomain.starlight", "star_seed"),
    # BMA and fusion
    "bma_study": ("stardomain.bma.core", "bma_study"),
    "fusion_row": ("stardomain.bma.fusion", "fusion_row"),
    # experiments
    "load_config": ("stardomain.experiment", "load_config"),
    "run_experiment": ("stardomain.experiment", "run_experiment"),
    "Study": ("stardomain.experiment.study", "Study"),
    "register_study": ("stardomain.experiment.study", "register_study"),
}

__all__ = [
    "StardomainError",
    "__version__",
    "load_dataset",
    "matching_sample",
    "create_model",
    "register_model",
    "Recipe",
    "default_recipe",
    "train_model",
    "train_zoo",
    "load_zoo",
    "save_checkpoint",
    "load_checkpoint",
    "load_state",
    "trace_spec",
    "align",
    "weight_matching",
    "activation_matching",
    "apply_permutation",
    "curve",
    "barriers",
    "evaluate_pair",
    "PairResult",
    "Starlight",
    "StarlightConfig",
    "StarCheckpoint",
    "train_star",
    "star_seed",
    "bma_study",
    "fusion_row",
    "load_config",
    "run_experiment",
    "Study",
    "register_study",
]
assert set(__all__) == {"StardomainError", "__version__", *_API}  # one list, checked at import


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'stardomain' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from stardomain.barrier import PairResult, barriers, curve, evaluate_pair
    from stardomain.bma.core import bma_study
    from stardomain.bma.fusion import fusion_row
    from stardomain.checkpoints.store import load as load_checkpoint
    from stardomain.checkpoints.store import load_state
    from stardomain.checkpoints.store import save as save_checkpoint
    from stardomain.data import load_dataset, matching_sample
    from stardomain.experiment import load_config, run_experiment
    from stardomain.experiment.study import Study, register_study
    from stardomain.models import create as create_model
    from stardomain.models import register as register_model
    from stardomain.permute import apply_permutation, trace_spec
    from stardomain.permute.activation_matching import activation_matching
    from stardomain.permute.align import align
    from stardomain.permute.weight_matching import weight_matching
    from stardomain.starlight import StarCheckpoint, Starlight, StarlightConfig, star_seed, train_star
    from stardomain.training.loop import Recipe, default_recipe, train_model
    from stardomain.training.zoo import load_zoo, train_zoo
