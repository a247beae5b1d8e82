"""Optional logging sinks for experiment progress: TensorBoard and Weights & Biases.

Results always live on disk (``events.jsonl``, ``results.json``); sinks only mirror numeric progress
for people who watch long GPU runs in those tools. Both are off by default and never required: asking
for one whose package is missing is a one-line error before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from stardomain.errors import StardomainError

KNOWN = ("tensorboard", "wandb")


class Sinks:
    """Fan-out of numeric event fields to the configured sinks."""

    def __init__(self, options: Mapping[str, Any], out_dir: Path, run_name: str):
        unknown = sorted(set(options) - set(KNOWN))
        if unknown:
            raise StardomainError(f"logging: unknown sink '{unknown[0]}'; available: {', '.join(KNOWN)}")
        self._tb = None
        self._wandb = None
        self._step = 0
        if options.get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise StardomainError("logging.tensorboard needs the tensorboard package: pip install 'stardomain[tensorboard]'") from None
            self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        wb = options.get("wandb")
        if wb:
            try:
                import wandb
            except ImportError:
                raise StardomainError("logging.wandb needs the wandb package: pip install 'stardomain[wandb]'") from None
            settings = dict(wb) if isinstance(wb, Mapping) else {}
            self._wandb = wandb.init(name=run_name, dir=str(out_dir), **settings)

    def log(self, kind: str, fields: Mapping[str, Any]) -> None:
        numeric = {f"{kind}/{k}": float(v) for k, v in fields.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numeric:
            return
        self._step += 1
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, self._step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numeric, step=self._step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
