"""A zoo trained in one vmapped pass equals the same zoo trained one model at a time."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from cli_helpers import run_cli
from own_models import DataDependent
from torch import nn

from stardomain.checkpoints import store
from stardomain.errors import StardomainError
from stardomain.training import batched as train_batched
from stardomain.training import zoo
from stardomain.training.loop import default_recipe, make_loader, make_optimizer

MLP = {"depth": 2, "width": 16}
TIMING_KEYS = {"train_seconds", "batched"}


def _members(folder, seeds):
    return [store.load_state(zoo.member_path(folder, s)) for s in seeds]


def _assert_same_members(seq, bat, atol=1e-5):
    """Weights to float tolerance, identical metadata apart from timings and the batched record."""
    for (sa, ma), (sb, mb) in zip(seq, bat):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), atol=atol, rtol=0), k
        assert set(mb) - set(ma) == {"batched"}
        for key in set(ma) - TIMING_KEYS - {"sha256", "metrics", "history"}:
            assert ma[key] == mb[key], key
        assert ma["metrics"] == pytest.approx(mb["metrics"], abs=1e-5)
        assert len(ma["history"]) == len(mb["history"])
        for ra, rb in zip(ma["history"], mb["history"]):
            assert ra.keys() == rb.keys() and ra == pytest.approx(rb, abs=1e-5)


def test_batched_members_equal_sequential_ones(digits, tmp_path):
    recipe = default_recipe("digits").replace(epochs=2)
    seeds = [0, 1, 2]
    zoo.train_zoo(digits, "mlp", MLP, recipe, seeds, tmp_path / "seq", progress=False)
    got = []
    paths = zoo.train_zoo(digits, "mlp", MLP, recipe, seeds, tmp_path / "bat", progress=False, batch_models=3, on_member=got.append)
    assert paths == got == [zoo.member_path(tmp_path / "bat", s) for s in seeds]
    bat = _members(tmp_path / "bat", seeds)
    _assert_same_members(_members(tmp_path / "seq", seeds), bat)
    for s, (_, meta) in zip(seeds, bat):
        assert meta["batched"]["models_per_pass"] == 3 and meta["batched"]["seeds"] == seeds and meta["seed"] == s
    # the models really differ from each other (own init and batch order), and nothing hidden is left behind
    assert not torch.equal(bat[0][0]["classifier.weight"], bat[1][0]["classifier.weight"])
    assert sorted(p.name for p in (tmp_path / "bat").iterdir()) == sorted(
        f"seed-{s}.{ext}" for s in seeds for ext in ("json", "safetensors")
    )
    # a second call finds every member complete and trains nothing
    before = [p.stat().st_mtime_ns for p in paths]
    zoo.train_zoo(digits, "mlp", MLP, recipe, seeds, tmp_path / "bat", progress=False, batch_models=3)
    assert [p.stat().st_mtime_ns for p in paths] == before


def _kill_in_epoch_two(monkeypatch, dataset, recipe):
    """Make the batched loop die a few steps into its second epoch (after one saved epoch)."""
    real_lr_at = train_batched.lr_at
    steps_per_epoch = -(-len(dataset.train_x) // recipe.batch_size)

    def dies(recipe, step, total, spe):
        if step == steps_per_epoch + 5:
            raise KeyboardInterrupt("killed")
        return real_lr_at(recipe, step, total, spe)

    monkeypatch.setattr(train_batched, "lr_at", dies)
    return lambda: monkeypatch.setattr(train_batched, "lr_at", real_lr_at)


def test_batched_run_killed_mid_epoch_resumes_to_the_same_members(digits, tmp_path, monkeypatch):
    recipe = default_recipe("digits").replace(epochs=3)
    seeds = [4, 5]
    zoo.train_zoo(digits, "mlp", MLP, recipe, seeds, tmp_path / "whole", progress=False, batch_models=2)
    revive = _kill_in_epoch_two(monkeypatch, digits, recipe)
    with pytest.raises(KeyboardInterrupt):
        zoo.train_zoo(digits, "mlp", MLP, recipe, seeds, tmp_path / "cut", progress=False, batch_models=2)
    state = train_batched.state_file(tmp_path / "cut", seeds)
    assert store.is_complete(state) and store.read_metadata(state)["epoch"] == 1
    assert not any(zoo.member_path(tmp_path / "cut", s).exists() for s in seeds)

    revive()
    zoo.train_zoo(digits, "mlp", MLP, recipe, seeds, tmp_path / "cut", progress=False, batch_models=2)
    for (sa, ma), (sb, mb) in zip(_members(tmp_path / "whole", seeds), _members(tmp_path / "cut", seeds)):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert ma["history"] == mb["history"]
    assert not state.exists() and not store.metadata_path(state).exists()


def test_training_state_of_another_run_is_refused(digits, tmp_path, monkeypatch):
    recipe = default_recipe("digits").replace(epochs=2)
    revive = _kill_in_epoch_two(monkeypatch, digits, recipe)
    with pytest.raises(KeyboardInterrupt):
        zoo.train_zoo(digits, "mlp", MLP, recipe, [0, 1], tmp_path, progress=False, batch_models=2)
    revive()
    with pytest.raises(StardomainError, match="different run .*config.*delete it"):
        zoo.train_zoo(digits, "mlp", MLP, recipe.replace(lr=0.01), [0, 1], tmp_path, progress=False, batch_models=2)


def test_batchnorm_model_with_batch_models_4_is_right(digits, tmp_path, capsys):
    """BatchNorm is batched per model: own batch statistics, own running averages (CLI path)."""
    args = ["-d", "digits", "-o", "width=8", "-o", "depth=2", "-o", "batchnorm=true", "-e", "2", "--n", "4", "-q"]
    one = run_cli(capsys, "train", *args, "--out", tmp_path / "one")
    four = run_cli(capsys, "train", *args, "--batch-models", "4", "--out", tmp_path / "four")
    assert one.code == 0 and four.code == 0, four.err
    assert "note:" not in four.err  # not refused
    assert four.out.count("test_acc=") == 4
    seeds = range(4)
    bat = _members(tmp_path / "four", seeds)
    assert all(m["batched"]["models_per_pass"] == 4 for _, m in bat)
    assert any(k.endswith("running_var") for k in bat[0][0])
    _assert_same_members(_members(tmp_path / "one", seeds), bat, atol=1e-4)


def test_cli_rejects_batch_models_below_one(tmp_path, capsys):
    res = run_cli(capsys, "train", "-d", "digits", "--n", "2", "--batch-models", "0", "--out", tmp_path)
    assert res.code == 2 and "--batch-models must be >= 1" in res.err


def test_refusals_name_the_reason():
    recipe = default_recipe("digits")
    dropout = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Dropout(0.5), nn.Linear(8, 10))
    assert "dropout" in train_batched.batching_refusal(dropout, recipe, (1, 8, 8))
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert train_batched.batching_refusal(plain, recipe, (1, 8, 8)) is None

    reason = train_batched.batching_refusal(DataDependent(), recipe, (1, 8, 8))
    assert reason is not None and "vmap" in reason and "\n" not in reason


def test_refused_models_fall_back_to_one_at_a_time(digits, tmp_path, monkeypatch):
    recipe = default_recipe("digits").replace(epochs=1)
    monkeypatch.setattr(train_batched, "batching_refusal", lambda *a, **k: "cannot batch this one")
    notes = []
    zoo.train_zoo(digits, "mlp", MLP, recipe, [0, 1], tmp_path / "z", progress=False, batch_models=2, notify=notes.append)
    assert notes == ["cannot batch this one"]
    metas = [json.loads(zoo.member_path(tmp_path / "z", s).with_suffix(".json").read_text()) for s in (0, 1)]
    assert all("batched" not in m for m in metas)


class _Images:
    """A tiny augmentable image dataset (what train_model needs of a Dataset)."""

    augment = True

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.train_y = torch.randint(0, 4, (200,), generator=g)
        self.train_x = torch.randn(200, 3, 10, 10, generator=g) + self.train_y.view(-1, 1, 1, 1) * 0.5
        self.test_y = torch.randint(0, 4, (64,), generator=g)
        self.test_x = torch.randn(64, 3, 10, 10, generator=g) + self.test_y.view(-1, 1, 1, 1) * 0.5

    def black(self) -> list[float]:
        return [-1.0, -1.0, -1.0]


def _convnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_convnet_with_augmentation_equals_train_model(optimizer):
    from stardomain.training.loop import train_model

    ds = _Images()
    recipe = default_recipe("cifar10", optimizer).replace(epochs=2, batch_size=32, warmup_epochs=1)
    assert recipe.augment
    seeds = [3, 7, 11]
    alone = [_convnet(s) for s in seeds]
    histories = [train_model(m, ds, recipe, seed=s, progress=False) for m, s in zip(alone, seeds)]
    stack, batched = train_batched.train_models_batched([_convnet(s) for s in seeds], ds, recipe, seeds, progress=False)
    for k, (m, h) in enumerate(zip(alone, histories)):
        got = stack.unstack(k)
        for name, v in m.state_dict().items():
            assert torch.allclose(v, got[name], atol=1e-5, rtol=0), name
        assert [r.keys() for r in h] == [r.keys() for r in batched[k]]
        assert all(a == pytest.approx(b, abs=1e-5) for a, b in zip(h, batched[k]))


def _mlp(seed: int, batchnorm: bool = False) -> nn.Module:
    from stardomain.models.mlp import build_mlp

    torch.manual_seed(seed)
    return build_mlp(10, (1, 8, 8), depth=2, width=8, batchnorm=batchnorm)


def test_plain_mlps_take_the_bmm_path_others_vmap():
    def chain(model):
        return train_batched.StackedModels([model, copy.deepcopy(model)]).chain

    assert chain(_mlp(0)) is not None
    seq = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10, bias=False))
    assert [op for op, *_ in chain(seq)] == ["flatten", "linear", "relu", "linear"]
    assert chain(_mlp(0, batchnorm=True)) is None  # BatchNorm: vmap
    assert chain(nn.Sequential(nn.Linear(64, 10))) is None  # no Flatten first
    assert chain(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))) is None
    hooked = _mlp(0)
    hooked.classifier.register_forward_hook(lambda *a: None)
    assert chain(hooked) is None


def _seq(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(64, 8, bias=False), nn.ReLU(), nn.Linear(8, 10))


@pytest.mark.parametrize("build", [_mlp, _seq])
def test_bmm_path_equals_vmap_path(build):
    """Logits (batched or shared input), losses and the hand-written gradients of the baddbmm path equal
    vmap + autograd's, to float rounding."""
    models = [build(s) for s in range(3)]
    fast, slow = train_batched.StackedModels(models), train_batched.StackedModels(models)
    slow.chain = None
    g = torch.Generator().manual_seed(0)
    x, shared = torch.randn(3, 20, 1, 8, 8, generator=g), torch.randn(20, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (3, 20), generator=g)
    with torch.no_grad():
        assert torch.allclose(fast.forward(shared, shared_input=True), slow.forward(shared, shared_input=True), atol=1e-6, rtol=0)
    (loss_a, logits_a), (loss_b, logits_b) = fast.step_grads(x, y), slow.step_grads(x, y)
    assert logits_a.shape == (3, 20, 10) and not logits_a.requires_grad
    assert torch.allclose(logits_a, logits_b, atol=1e-6, rtol=0) and torch.allclose(loss_a, loss_b, atol=1e-6, rtol=0)
    for k, p in fast.params.items():
        assert p.grad is not None and torch.allclose(p.grad, slow.params[k].grad, atol=1e-7, rtol=0), k


def test_bmm_path_trains_like_the_vmap_path(digits, monkeypatch):
    """The whole fast path (baddbmm layers, gathered batches, fused SGD, one-pass final metrics) vs the general one."""
    recipe = default_recipe("digits").replace(epochs=2)
    seeds = [0, 1, 2]
    fast, fast_h = train_batched.train_models_batched([_mlp(s) for s in seeds], digits, recipe, seeds, progress=False)
    assert fast.chain is not None
    monkeypatch.setattr(train_batched, "_linear_chain", lambda *a: None)
    monkeypatch.setattr(train_batched, "_gathered_batches", lambda *a: None)
    monkeypatch.setattr(train_batched, "make_optimizer", lambda p, r, **kw: make_optimizer(p, r))
    slow, slow_h = train_batched.train_models_batched([_mlp(s) for s in seeds], digits, recipe, seeds, progress=False)
    assert slow.chain is None
    for k in range(len(seeds)):
        a, b = fast.unstack(k), slow.unstack(k)
        assert all(torch.allclose(a[n], b[n], atol=1e-5, rtol=0) for n in a)
        assert all(ra == pytest.approx(rb, abs=1e-5) for ra, rb in zip(fast_h[k], slow_h[k]))
    assert all(a == pytest.approx(b, abs=1e-5) for a, b in zip(fast.final_metrics(digits), slow.final_metrics(digits)))


def test_gathered_batches_are_the_loaders_batches(digits):
    recipe = default_recipe("digits")
    loaders = [make_loader(digits, recipe, s) for s in (0, 5)]
    gathered = train_batched._gathered_batches(loaders)
    assert gathered is not None
    for epoch in (0, 3):
        for ld in loaders:
            ld.epoch = epoch
        steps = list(zip(gathered(epoch), *loaders))
        assert len(steps) == len(loaders[0])
        for (xb, yb), *own in steps:
            assert torch.equal(xb, torch.stack([x for x, _ in own])) and torch.equal(yb, torch.stack([y for _, y in own]))
    augmented = [make_loader(_Images(), default_recipe("cifar10"), s) for s in (0, 1)]
    assert train_batched._gathered_batches(augmented) is None  # augmentation draws per batch: the loaders serve those
