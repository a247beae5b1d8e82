"""``trace_spec(capture="export")``: the torch.export (ATen) capture gives the same spec as torch.fx.

The export path exists for models fx cannot trace (Hugging Face transformers, see test_hf.py); on the
models both can trace, the two graphs must lead to the very same groups and axes. No transformers needed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stardomain import models
from stardomain.errors import StardomainError
from stardomain.permute import apply_permutation, random_permutation, trace_spec

SMALL = {
    "mlp": {"depth": 2, "width": 16, "batchnorm": True},
    "resnet20": {"width": 0.5},
    "densenet40_12": {"depth": 13, "growth": 4},
    "vgg11": {"width": 0.125},
}


def _same(a, b) -> None:
    assert a.groups == b.groups
    assert {g: sorted(a.axes[g]) for g in a.groups} == {g: sorted(b.axes[g]) for g in b.groups}
    assert a.ties == b.ties and a.buffers == b.buffers


@pytest.mark.parametrize("name", sorted(SMALL))
def test_export_and_fx_give_the_same_spec(name):
    torch.manual_seed(0)
    model = models.create(name, 10, (3, 8, 8), **SMALL[name]).eval()
    _same(trace_spec(model, capture="fx"), trace_spec(model, capture="export"))


class _Attention(nn.Module):
    """Pre-LN self-attention written by hand (q @ k^T, softmax, @ v), a CLS token, learned positions, [:, 0] pooling."""

    def __init__(self, d: int = 8, h: int = 2, t: int = 4) -> None:
        super().__init__()
        self.h = h
        self.inp, self.cls, self.pos = nn.Linear(3, d), nn.Parameter(torch.randn(1, 1, d)), nn.Parameter(torch.randn(1, t + 1, d))
        self.ln, self.q, self.k, self.v, self.o = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.fc1, self.fc2, self.head = nn.Linear(d, 16), nn.Linear(16, d), nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, T, 3)
        n, t, _ = x.shape
        z = torch.cat([self.cls.expand(n, -1, -1), self.inp(x)], dim=1) + self.pos
        y = self.ln(z)
        q, k, v = (f(y).view(n, t + 1, self.h, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        z = z + self.o(att.transpose(1, 2).reshape(n, t + 1, -1))
        z = z + self.fc2(F.gelu(self.fc1(z)))
        return self.head(z[:, 0])


def test_hand_written_attention_with_a_cls_token_traces_alike_in_both_captures():
    torch.manual_seed(0)
    model = _Attention().eval()
    x = torch.randn(2, 4, 3)
    with pytest.raises(StardomainError):  # fx: z[:, 0] (getitem with slices) is not followed; export's select is
        trace_spec(model, x, capture="fx")
    spec = trace_spec(model, x, capture="export")
    info = spec.summary()
    assert info["residual_fixed"] == [] and info["unit_share"] == 1.0 and info["covered_share"] > 0.95
    stream = next(g for g, axes in spec.axes.items() if any(a.key == "cls" for a in axes))
    assert {"cls", "pos", "inp.weight", "ln.weight"} <= {a.key for a in spec.axes[stream]}
    assert {a.axis for a in spec.axes[stream] if a.key in ("cls", "pos")} == {2}
    assert sum(".head" in g for g in spec.groups) == 4  # 2 heads x (q/k, v/o)
    state = model.state_dict()
    permuted = apply_permutation(state, random_permutation(spec, 1), spec=spec)
    with torch.no_grad():
        y0, y1 = torch.func.functional_call(model, state, (x,)), torch.func.functional_call(model, permuted, (x,))
    assert float((y0 - y1).abs().max()) < 1e-5


def test_unknown_capture_is_refused():
    with pytest.raises(StardomainError, match="unknown capture"):
        trace_spec(models.create("mlp", 10, (1, 4, 4), depth=1, width=4), capture="jit")
