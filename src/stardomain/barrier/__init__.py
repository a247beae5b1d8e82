"""Barriers: the linear path between two solutions (:mod:`.path`) and the one pair evaluation (:mod:`.pair`)."""

from stardomain.barrier.pair import PairResult, evaluate_pair
from stardomain.barrier.path import METRICS, Curve, barrier_profile, barriers, curve, evaluate_splits, l2_distance

__all__ = ["METRICS", "Curve", "PairResult", "barrier_profile", "barriers", "curve", "evaluate_pair", "evaluate_splits", "l2_distance"]
