"""LossAccuracy, the one loss/accuracy meter of every loop (issue 34, "typed seams").

It must give the numbers the hand-written accumulators it replaced gave, bit for bit (the recorded
histories and the demo digest depend on them), agree with torchmetrics' MeanMetric and
MulticlassAccuracy, and stay the only place that sums losses and counts top-1 hits.
"""

from __future__ import annotations

import ast
import math

import pytest
import torch
import torch.nn.functional as F
from paths import REPO

from stardomain._util.metrics import LossAccuracy

SRC = REPO / "src" / "stardomain"


def _batches(k: int | None = None, sizes: tuple[int, ...] = (7, 16, 3, 16), classes: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lead = () if k is None else (k,)
    for b in sizes:
        logits = torch.randn(*lead, b, classes, generator=g)
        logits[..., 0, 1] = logits[..., 0, 2]  # a tie: argmax takes the first index
        yield logits, torch.randint(0, classes, (b,), generator=g)


def test_matches_the_hand_written_float64_evaluation_sum_bit_for_bit() -> None:
    meter = LossAccuracy()
    total, correct, n = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.long), 0
    for logits, y in _batches():
        meter.update(logits, y, F.cross_entropy(logits, y, reduction="sum"))
        total += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
    assert meter.compute() == (total.item() / n, correct.item() / n)
    assert (meter.loss, meter.acc) == meter.compute() and meter.n == n


def test_float32_training_sums_and_host_float_sums_stay_in_their_dtype() -> None:
    """Training histories were summed in float32 (mean * n); Starlight summed host floats: both unchanged."""
    meter, host = LossAccuracy(dtype=torch.float32), LossAccuracy()
    loss32, floats, seen = torch.zeros(()), 0.0, 0
    for logits, y in _batches():
        mean = F.cross_entropy(logits, y)
        meter.add(mean * len(y), len(y))
        host.add(mean.item() * len(y), len(y))
        loss32 += mean * len(y)
        floats += mean.item() * len(y)
        seen += len(y)
    assert meter.loss_sum is not None and meter.loss_sum.dtype == torch.float32
    assert meter.loss == loss32.item() / seen and host.loss == floats / seen
    assert meter.loss != host.loss  # the dtype is the caller's choice, and it shows


def test_a_stack_of_models_gives_each_models_own_numbers() -> None:
    k = 3
    stacked = LossAccuracy((k,))
    single = [LossAccuracy() for _ in range(k)]
    for logits, y in _batches(k=k):
        losses = F.cross_entropy(logits.transpose(1, 2), y.expand(k, -1), reduction="none").sum(1)
        stacked.update(logits, y, losses)
        for j, m in enumerate(single):
            m.update(logits[j], y, losses[j])
    assert stacked.compute_each() == [m.compute() for m in single]
    with pytest.raises(ValueError, match="compute_each"):
        stacked.compute()


def test_empty_and_loss_only_meters() -> None:
    assert LossAccuracy().compute() == (0.0, 0.0)  # a mean over nothing is 0, as evaluate_batches always gave
    assert LossAccuracy((2,)).compute_each() == [(0.0, 0.0), (0.0, 0.0)]
    loss_only = LossAccuracy()
    loss_only.add(torch.tensor(3.0), 2)
    assert loss_only.loss == 1.5 and math.isnan(loss_only.acc)


def test_keeps_no_autograd_graph() -> None:
    w = torch.randn(4, 3, requires_grad=True)
    meter = LossAccuracy(dtype=torch.float32)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    logits = x @ w
    meter.update(logits, y, F.cross_entropy(logits, y) * len(y))
    assert meter.loss_sum is not None and not meter.loss_sum.requires_grad


def test_agrees_with_torchmetrics() -> None:
    tm = pytest.importorskip("torchmetrics")
    classes = 5
    meter = LossAccuracy()
    mean = tm.MeanMetric().set_dtype(torch.float64)
    acc = tm.classification.MulticlassAccuracy(num_classes=classes, average="micro")
    for logits, y in _batches(classes=classes, seed=1):
        meter.update(logits, y, F.cross_entropy(logits, y, reduction="sum"))
        mean.update(F.cross_entropy(logits, y).double(), weight=len(y))
        acc.update(logits, y)
    assert meter.loss == pytest.approx(float(mean.compute()), rel=1e-6)
    assert meter.acc == pytest.approx(float(acc.compute()), abs=1e-7)


# ------------------------------------------------------------------ the only accumulator


def _hand_accumulations(tree: ast.AST) -> list[int]:
    """Lines that count top-1 hits (``x.argmax(..) == y`` / ``.eq(y)``) or add a batch's summed loss by hand
    (``+= f(.., reduction="sum")`` or ``+= loss * len(batch)``)."""

    def is_argmax(node: ast.AST) -> bool:
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "argmax"

    def sums_a_batch(node: ast.AST) -> bool:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and any(
                kw.arg == "reduction" and isinstance(kw.value, ast.Constant) and kw.value.value == "sum" for kw in sub.keywords
            ):
                return True
            if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Mult):
                sides = (sub.left, sub.right)
                by_len = any(isinstance(s, ast.Call) and isinstance(s.func, ast.Name) and s.func.id == "len" for s in sides)
                if by_len and not any(isinstance(s, (ast.List, ast.Tuple)) for s in sides):  # not [label] * len(files)
                    return True
        return False

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(is_argmax(o) for o in (node.left, *node.comparators)):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "eq" and is_argmax(node.func.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add) and sums_a_batch(node.value):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_pattern_check_sees_the_accumulators_it_replaced() -> None:
    old = """
for xb, yb in batches:
    total_loss += F.cross_entropy(logits, yb, reduction="sum").double()
    correct += (logits.argmax(1) == yb).sum()
    loss_sum += self.step(xb, yb) * len(yb)
    total += float(midpoint.loss(mid, x, y, reduction="sum").double())
    correct = correct + logits.argmax(-1).eq(yb).sum()
    labels += [index[name]] * len(found)
"""
    assert _hand_accumulations(ast.parse(old)) == [3, 4, 5, 6, 7]


def test_no_module_but_the_meter_sums_losses_or_counts_hits_by_hand() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "_util" / "metrics.py":
            continue
        found += [f"{path.relative_to(REPO)}:{line}" for line in _hand_accumulations(ast.parse(path.read_text()))]
    assert found == [], "use stardomain._util.metrics.LossAccuracy instead of a hand-written sum:\n" + "\n".join(found)


def test_the_meter_module_imports_only_torch() -> None:
    """It sits in _util, under every layer: nothing of stardomain above it may be imported."""
    tree = ast.parse((SRC / "_util" / "metrics.py").read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert mods <= {"__future__", "math", "torch"}
