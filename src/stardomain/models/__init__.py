"""Model registry: ``create(name, num_classes, in_shape, **options)``.

Importing this package registers every built-in architecture (mlp, vgg11/16/19, resnet20,
resnet18, wrn, densenet40_12). All models are fx-traceable plain ``nn.Module``s and carry
``model.arch`` so checkpoints can rebuild them.

Shape support: every model accepts any channel count and any H, W >= 1, except
``densenet40_12`` which needs H, W >= 4 (two 2x2 average-pool transitions).
"""

from stardomain.models import densenet, mlp, resnet, vgg, wrn  # noqa: F401  (registers builders)
from stardomain.models.init import DEFAULT_INIT, INIT_SCHEMES, PAPER_SCHEMES
from stardomain.models.registry import (
    MAX_PARAMETERS,
    ModelEntry,
    available_models,
    build_on_meta,
    canonical_name,
    check_init,
    create,
    legacy_init,
    model_info,
    register,
    valid_names,
    with_init,
)

__all__ = [
    "DEFAULT_INIT",
    "INIT_SCHEMES",
    "MAX_PARAMETERS",
    "PAPER_SCHEMES",
    "ModelEntry",
    "available_models",
    "build_on_meta",
    "canonical_name",
    "check_init",
    "create",
    "legacy_init",
    "model_info",
    "register",
    "valid_names",
    "with_init",
]
