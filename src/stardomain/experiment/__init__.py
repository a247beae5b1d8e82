"""Experiments: one YAML file -> every study of the paper, resumable (see :mod:`.pipeline`)."""

from stardomain.experiment.config import ExperimentConfig, load_config
from stardomain.experiment.pipeline import Experiment, run_experiment

__all__ = ["Experiment", "ExperimentConfig", "load_config", "run_experiment"]
