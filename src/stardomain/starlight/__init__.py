"""Starlight (Algorithm 1): the algorithm (:mod:`.algorithm`) and the one star writer (:mod:`.writer`)."""

from stardomain.starlight.algorithm import Starlight, StarlightResult, TSampler
from stardomain.starlight.config import STATE_KIND, T_SAMPLING, StarlightConfig, check_not_source_init, repeat_seed, star_seed
from stardomain.starlight.writer import STAR_META_KEYS, StarCheckpoint, star_identity, train_star

__all__ = [
    "STAR_META_KEYS",
    "STATE_KIND",
    "T_SAMPLING",
    "StarCheckpoint",
    "Starlight",
    "StarlightConfig",
    "StarlightResult",
    "TSampler",
    "check_not_source_init",
    "repeat_seed",
    "star_identity",
    "star_seed",
    "train_star",
]
