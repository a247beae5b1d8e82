"""Are the regular models converged? The paper's barriers are between *solutions*.

The paper trains every model to ~100 % train accuracy (train loss ~0.001, 200 epochs); a barrier
between models still far from a minimum measures how unfinished they are as much as how the
solutions are arranged, and on BatchNorm CNNs it is an order of magnitude larger (issue 22). Each
checkpoint records its final train loss/accuracy on the data it was trained on (``metrics``,
without augmentation); here a zoo is judged against a threshold, and every table, verdict and
``stardomain train`` says so when its models fall short.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from stardomain._util.units import pct
from stardomain.analysis.stats import as_float, mean_std, undefined

DEFAULT_TRAIN_ACC = 0.99  # eval.converged_train_acc: the paper's models reach ~100 %
NOT_CONVERGED = "sources not converged: barriers are not the paper's quantity"


def zoo_convergence(metrics: Sequence[Mapping[str, float]], threshold: float, loss_threshold: float | None = None) -> dict[str, Any]:
    """What results.json records of a zoo's convergence (``metrics``: each model's final metrics).

    A model counts as converged at ``threshold`` train accuracy and, where ``loss_threshold`` is set, at most
    that train loss: on easy data (digits) 99 % accuracy comes within 5 epochs while the loss, and the barriers,
    keep falling for tens more, so the accuracy alone is necessary, not sufficient (README "Results").
    """
    accs = [as_float(m["train_acc"]) for m in metrics if "train_acc" in m]  # null (a diverged model's file): NaN
    losses = [as_float(m["train_loss"]) for m in metrics if "train_loss" in m]
    below = sum(a < threshold or (loss_threshold is not None and lo > loss_threshold) for a, lo in zip(accs, losses))
    out = {
        "threshold": threshold,
        "n": len(accs),
        "train_acc": mean_std(accs),
        "train_loss": mean_std(losses),
        "min_train_acc": min(accs) if accs else None,
        "n_below": below,
        "converged": bool(accs) and below == 0,
    }
    if loss_threshold is not None:
        out |= {"loss_threshold": loss_threshold, "max_train_loss": max(losses) if losses else None}
    return out


def describe(conv: Mapping[str, Any]) -> str:
    """One phrase: how far the zoo is from the threshold."""
    loss = f" or above train loss {conv['loss_threshold']:g}" if "loss_threshold" in conv else ""
    mean = conv["train_loss"]["mean"]
    return (
        f"{conv['n_below']} of {conv['n']} regular models below {pct(conv['threshold'], 1)} train accuracy{loss} "
        f"(lowest {pct(conv['min_train_acc'])}, mean train loss {'–' if undefined(mean) else f'{mean:.4f}'})"
    )


def convergence_line(metas: Sequence[Mapping[str, Any]], threshold: float = DEFAULT_TRAIN_ACC) -> str:
    """'' when every model reached ``threshold``; otherwise the warning `stardomain train` prints."""
    metrics = [m["metrics"] for m in metas if "metrics" in m]
    if not metrics:
        return ""
    conv = zoo_convergence(metrics, threshold)
    if conv["converged"]:
        return ""
    return f"{describe(conv)}: {NOT_CONVERGED} (train longer, or lower the threshold knowingly)"


def flag_suffix(conv: Mapping[str, Any] | None) -> str:
    """What a verdict or table cell carries when its zoo is not converged ('' otherwise, or when unknown)."""
    if not conv or conv.get("converged", True):
        return ""
    return f" [{NOT_CONVERGED}]"
