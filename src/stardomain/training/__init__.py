"""Training: the per-epoch resumable state every trainer (one model, a batched group, Starlight) shares."""

from stardomain.training.state import TrainingState, load_training_state, remove_training_state, save_training_state

__all__ = ["TrainingState", "load_training_state", "remove_training_state", "save_training_state"]
