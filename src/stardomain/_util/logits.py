"""The logits of one model call, whatever the model returns: the one unwrapping every evaluation uses.

Registry models return the logits tensor; a Hugging Face model returns a ``ModelOutput`` (its ``logits``), and
other code returns a tuple or a dict holding them. :func:`logits_of` takes each of those to the tensor, so a raw
``transformers`` model can be passed to ``evaluate_pair``, ``curve`` or ``bma_study`` as it is.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from stardomain.errors import StardomainError

__all__ = ["logits_of"]


def logits_of(out: Any) -> Tensor:
    """``out`` itself (a tensor), its ``logits`` (a Hugging Face ``ModelOutput`` or a dict), or the first tensor of a
    tuple/list (``return_dict=False``); anything else is refused in one line."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, (tuple, list)):
        first = next((t for t in out if isinstance(t, Tensor)), None)
        if first is not None:
            return first
    raise StardomainError(
        f"the model returned a {type(out).__name__} without logits; make its forward return the logits tensor "
        "(or an output with a .logits tensor)"
    )
