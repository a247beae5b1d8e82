"""The fast-path options (precision, channels_last, compile) on the CPU: one code path for both devices.

The CUDA versions of these checks are in test_cuda.py; here the same options must train on the CPU
(or be refused in one line), leave fp32 runs exactly as they were, and hand back an fp32 NCHW model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stardomain import models
from stardomain.data import TensorLoader, augment_batch
from stardomain.errors import StardomainError
from stardomain.training.loop import Recipe, default_recipe, train_model
from stardomain.training.memformat import channels_last_safe

PAPER_KEYS = {"optimizer", "lr", "momentum", "nesterov", "weight_decay", "epochs", "batch_size", "schedule", "warmup_epochs", "augment"}


def _run(ds, recipe, arch="mlp", **options):
    torch.manual_seed(0)
    m = models.create(arch, ds.num_classes, ds.in_shape, **options)
    return m, train_model(m, ds, recipe, seed=0, progress=False)


def test_default_recipe_keeps_the_identity_of_existing_runs():
    """Zoo identity is recipe.to_dict(): an fp32 run's dict must be the one recorded before these options."""
    assert set(Recipe().to_dict()) == PAPER_KEYS
    assert set(default_recipe("digits").to_dict()) == PAPER_KEYS
    fast = Recipe(precision="bf16", channels_last=True, compile=True)
    assert {k: fast.to_dict()[k] for k in ("precision", "channels_last", "compile")} == {
        "precision": "bf16",
        "channels_last": True,
        "compile": True,
    }
    assert Recipe.from_dict(fast.to_dict()) == fast
    assert Recipe.from_dict(Recipe().to_dict()) == Recipe()


def test_unknown_precision_and_fp16_on_cpu_are_refused(digits):
    with pytest.raises(StardomainError, match="unknown precision 'fp8'"):
        Recipe(precision="fp8")
    m = models.create("mlp", digits.num_classes, digits.in_shape, depth=1, width=8)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(StardomainError, match="fp16 needs a CUDA device"):
        train_model(m, digits, default_recipe("digits").replace(epochs=1, precision="fp16"), seed=0, progress=False)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # refused before any step


def test_bf16_autocast_trains_on_cpu_with_fp32_weights(digits):
    recipe = default_recipe("digits").replace(epochs=2)
    ref, ref_hist = _run(digits, recipe, depth=2, width=32)
    low, low_hist = _run(digits, recipe.replace(precision="bf16"), depth=2, width=32)
    assert all(v.dtype == torch.float32 for v in low.state_dict().values())
    # bf16 matmuls really ran (weights differ) yet the run learns the same
    assert not torch.equal(next(ref.parameters()), next(low.parameters()))
    assert abs(low_hist[-1]["test_acc"] - ref_hist[-1]["test_acc"]) < 0.05
    assert low_hist[-1]["test_loss"] == pytest.approx(ref_hist[-1]["test_loss"], rel=0.05)


def test_channels_last_training_is_refused_off_cuda_before_any_work(digits):
    """torch 2.13's CPU NHWC conv backward aborts the whole process on some CPUs (AMD EPYC, 4-channel ResNet-20):
    no except can catch that, so CPU channels_last training is one error line; the CUDA equivalence test is in
    test_cuda.py."""
    recipe = default_recipe("digits").replace(epochs=1, channels_last=True)
    torch.manual_seed(0)
    m = models.create("resnet20", 10, (1, 8, 8), width=0.25)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(StardomainError, match="recipe channels_last needs a CUDA device \\(got cpu\\)"):
        train_model(m, digits, recipe, seed=0, progress=False)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # not a step was taken


class ViewFlatten(nn.Module):
    """A convnet that flattens with .view, which NHWC strides break."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def test_channels_last_is_skipped_where_unsafe(digits):
    m = ViewFlatten()
    x = digits.train_x[:4]
    assert not channels_last_safe(m, x)
    assert channels_last_safe(models.create("resnet20", 10, (1, 8, 8), width=0.25), x)
    assert not channels_last_safe(models.create("mlp", 10, (1, 8, 8), depth=1, width=8), x)  # no conv: nothing to gain


def test_compile_option_compiles_the_training_step(digits, monkeypatch):
    """The inductor compile costs ~45 s on a CPU, so this run uses aot_eager (same tracing, no codegen)."""
    calls = []
    real = torch.compile

    def spy(model, **kw):
        calls.append(model)
        return real(model, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", spy)
    recipe = default_recipe("digits").replace(epochs=1)
    ref, ref_hist = _run(digits, recipe, depth=2, width=16)
    comp, hist = _run(digits, recipe.replace(compile=True), depth=2, width=16)
    assert len(calls) == 1 and calls[0] is comp  # the model's own weights were trained through the compiled step
    assert hist[-1]["test_loss"] == pytest.approx(ref_hist[-1]["test_loss"], rel=1e-5)
    assert not any(k.startswith("_orig_mod") for k in comp.state_dict())  # checkpoints keep plain names


def test_per_channel_fill_on_the_device_is_the_host_fill():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 6, 6, generator=g)
    fill = (-1.0, 0.5, 2.0)
    a = augment_batch(x, torch.Generator().manual_seed(1), fill=fill)
    b = augment_batch(x, torch.Generator().manual_seed(1), fill=torch.tensor(fill))
    assert torch.equal(a, b)
    loader = TensorLoader(x, torch.arange(5), batch_size=5, shuffle=False, augment=True, fill=fill, seed=3)
    ((xb, _),) = list(loader)
    assert torch.equal(xb, augment_batch(x, loader.generator(0), fill=fill))


def test_stars_inherit_the_sources_schedule_but_not_their_execution_options():
    """Starlight has no bf16/NHWC/compile path: a star recipe carrying them would be recorded falsely, so it is refused."""
    from stardomain.experiment.config import ExperimentConfig
    from stardomain.starlight import StarlightConfig

    fast = Recipe(epochs=3, lr=0.05, precision="bf16", channels_last=True, compile=True)
    assert fast.without_execution() == Recipe(epochs=3, lr=0.05)
    assert ExperimentConfig().star_recipe(fast, {"epochs": 2}) == Recipe(epochs=2, lr=0.05)
    with pytest.raises(StardomainError, match="star models train in fp32"):
        StarlightConfig(recipe=fast)


def test_a_run_asking_for_channels_last_on_cpu_is_refused_before_any_work(tmp_path, capsys):
    import yaml
    from cli_helpers import assert_one_line_error, run_cli

    cfg = {
        "name": "nhwc",
        "dataset": "digits",
        "device": "cpu",
        "model": {"name": "resnet20", "options": {"width": 0.25}},
        "train": {"epochs": 1, "channels_last": True},
        "sources": 2,
        "held_out": 1,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert_one_line_error(
        run_cli(capsys, "run", tmp_path / "c.yaml", "--out", tmp_path / "out"), "recipe channels_last needs a CUDA device (got cpu)"
    )
    assert not (tmp_path / "out" / "experiment.json").exists()
