"""The one resumable training state: round trip, refusals, and no second save/restore path in the package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import stardomain
from stardomain.errors import StardomainError
from stardomain.training import load_training_state, remove_training_state, save_training_state

PACKAGE = Path(stardomain.__file__).parent


def _trained_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_extra_tensors(tmp_path: Path) -> None:
    model, opt = _trained_optimizer()
    path = tmp_path / ".x.state.safetensors"
    perm = torch.tensor([1, 0])
    save_training_state(
        path,
        kind="toy-state",
        epoch=3,
        model=model.state_dict(),
        optimizer=opt,
        extra={"perm.0.P_0": perm},
        history=[{"epoch": 3}],
        identity={"seed": 1},
    )
    fresh = torch.nn.Linear(3, 2)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    saved = load_training_state(path, opt2, kind="toy-state", identity={"seed": 1})
    assert saved is not None and saved.epoch == 3 and saved.meta["history"] == [{"epoch": 3}]
    assert all(torch.equal(saved.model[k], v) for k, v in model.state_dict().items())
    assert torch.equal(saved.prefixed("perm")["0.P_0"], perm)
    for (_, a), (_, b) in zip(sorted(opt.state_dict()["state"].items()), sorted(opt2.state_dict()["state"].items())):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    with pytest.raises(StardomainError, match=r"different run \(differs in: seed\)"):
        load_training_state(path, opt2, identity={"seed": 2})
    with pytest.raises(StardomainError, match="holds a state of kind 'toy-state', not 'other-state'"):
        load_training_state(path, opt2, kind="other-state")
    with pytest.raises(StardomainError, match="reserved prefix"):
        save_training_state(path, kind="toy-state", epoch=1, model={}, optimizer=opt, extra={"opt.0.x": perm})
    remove_training_state(path)
    assert list(tmp_path.iterdir()) == [] and load_training_state(path, opt2) is None


def test_no_second_save_or_restore_path_in_the_package() -> None:
    """Optimizer state is flattened, and training states are written, in stardomain.training.state only."""
    owner = PACKAGE / "training" / "state.py"
    patterns = [
        r"\.state_dict\(\)\[.state.\]",
        r"[\"']opt\.",
        r"_optimizer_tensors|_restore_optimizer",
        r"kind[\"']?\s*[:=]\s*[\"'][a-z-]*state[\"']",
    ]
    offenders = [
        f"{p.relative_to(PACKAGE)}: {pat}" for p in PACKAGE.rglob("*.py") if p != owner for pat in patterns if re.search(pat, p.read_text())
    ]
    assert offenders == []
    assert all(re.search(pat, owner.read_text()) for pat in patterns[:2])  # the patterns do match the owner
