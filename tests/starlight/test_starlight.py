"""Starlight (Algorithm 1): the update is the paper's, the cadence is honoured, sources stay untouched,
runs resume exactly, and on real data the star model is better connected than regular models."""

from __future__ import annotations

import itertools
import statistics

import pytest
import torch
import torch.nn.functional as F

from stardomain import models
from stardomain.checkpoints import store
from stardomain.errors import StardomainError
from stardomain.starlight import Starlight, StarlightConfig, TSampler
from stardomain.training.loop import Recipe


def _mlp(seed: int, ds, **kw):
    torch.manual_seed(seed)
    return models.create("mlp", ds.num_classes, ds.in_shape, depth=2, width=16, **kw)


def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


def test_t_zero_single_source_step_equals_plain_training_step(digits):
    xb, yb = digits.train_x[:64], digits.train_y[:64]
    star = _mlp(0, digits)
    plain = _mlp(0, digits)
    source = _mlp(1, digits).state_dict()
    sl = Starlight(star, [source], digits, StarlightConfig(recipe=Recipe(lr=0.1, epochs=1), matching="none"))
    sl.step(xb, yb, [(0, 0.0)], lr=0.1)
    opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss = F.cross_entropy(plain(xb), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for (k, a), b in zip(star.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=k)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.75])
def test_gradient_is_one_minus_t_times_gradient_at_interpolated_point(digits, t):
    xb, yb = digits.train_x[:128], digits.train_y[:128]
    star = _mlp(0, digits)
    source = _mlp(1, digits).state_dict()
    sl = Starlight(star, [source], digits, StarlightConfig(matching="none"))
    total, _ = sl.loss(xb, yb, [(0, t)])
    total.backward()
    g_star = _grads(star)
    # the same loss evaluated by a model holding the interpolated weights
    point = _mlp(2, digits)
    point.load_state_dict({k: (1 - t) * v + t * source[k] for k, v in star.state_dict().items()})
    F.cross_entropy(point(xb), yb).backward()
    g_point = _grads(point)
    for k in g_star:
        torch.testing.assert_close(g_star[k], (1 - t) * g_point[k], rtol=1e-5, atol=1e-7)


def test_fusion_term_adds_own_cross_entropy(digits):
    xb, yb = digits.train_x[:64], digits.train_y[:64]
    star = _mlp(0, digits)
    source = _mlp(1, digits).state_dict()
    sl = Starlight(star, [source], digits, StarlightConfig(matching="none", mu=0.5))
    total, interp = sl.loss(xb, yb, [(0, 0.4)])
    own = F.cross_entropy(star(xb), yb)
    torch.testing.assert_close(total, interp + 0.5 * own)


@pytest.mark.parametrize("every, expected", [(None, 3), (5, None)])
def test_realignment_cadence(digits, every, expected, monkeypatch):
    sources = [_mlp(s, digits).state_dict() for s in (1, 2)]
    config = StarlightConfig(recipe=Recipe(epochs=3, batch_size=256, lr=0.05), realign_every=every)
    sl = Starlight(_mlp(0, digits), sources, digits, config)
    steps_per_epoch = -(-len(digits.train_y) // 256)
    calls: list[int] = []
    original = sl.realign

    def spy():
        calls.append(1)
        return original()

    monkeypatch.setattr(sl, "realign", spy)
    sl.fit(progress=False)
    total = 3 * steps_per_epoch
    in_loop = expected if expected is not None else -(-total // every)
    assert len(calls) == in_loop + 1  # + the final alignment of every source to the finished star


def test_samplers():
    g = torch.Generator().manual_seed(0)
    for scheme in ("uniform", "beta", "stratified"):
        beta = {"t_beta": (2.0, 5.0)} if scheme == "beta" else {}  # t_beta with another sampling is refused
        ts = TSampler(StarlightConfig(t_sampling=scheme, **beta), g).sample(4000)
        assert all(0.0 <= t <= 1.0 for t in ts)
        mean = statistics.fmean(ts)
        assert abs(mean - (2 / 7 if scheme == "beta" else 0.5)) < 0.02, scheme
    strat = TSampler(StarlightConfig(t_sampling="stratified"), torch.Generator().manual_seed(1)).sample(8)
    assert sorted(int(t * 8) for t in strat) == list(range(8))
    assert TSampler(StarlightConfig(t_sampling="constant", t_constant=0.25), g).sample(3) == [0.25] * 3
    with pytest.raises(StardomainError, match="t_sampling"):
        StarlightConfig(t_sampling="gauss")


def test_resumed_starlight_equals_uninterrupted(digits, tmp_path):
    sources = [_mlp(s, digits).state_dict() for s in (1, 2, 3)]
    config = StarlightConfig(recipe=Recipe(epochs=3, batch_size=128, lr=0.05))
    full = Starlight(_mlp(0, digits), sources, digits, config, seed=4)
    full.fit(progress=False)

    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Starlight(_mlp(0, digits), sources, digits, config, seed=4).fit(
            progress=False, resume_path=tmp_path / ".s.safetensors", on_epoch=stop
        )
    resumed = Starlight(_mlp(0, digits), sources, digits, config, seed=4)
    resumed.fit(progress=False, resume_path=tmp_path / ".s.safetensors")
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_sources_are_never_modified(digits):
    sources = [_mlp(s, digits).state_dict() for s in (1, 2)]
    copies = [{k: v.clone() for k, v in s.items()} for s in sources]
    Starlight(_mlp(0, digits), sources, digits, StarlightConfig(recipe=Recipe(epochs=2, lr=0.05))).fit(progress=False)
    for s, c in zip(sources, copies):
        for k in s:
            assert torch.equal(s[k], c[k])


def test_architecture_mismatch_is_refused(digits):
    other = models.create("mlp", 10, digits.in_shape, depth=2, width=8).state_dict()
    with pytest.raises(StardomainError, match="architecture"):
        Starlight(_mlp(0, digits), [other], digits, StarlightConfig())


def test_star_cli_leaves_source_checkpoints_untouched(fashion_mlp_zoo, tmp_path, capsys):
    from cli_helpers import run_cli

    zoo_dir = fashion_mlp_zoo[0].parent
    before = {p: p.read_bytes() for p in zoo_dir.iterdir()}
    out = tmp_path / "star.safetensors"
    r = run_cli(capsys, "star", "--sources", zoo_dir, "--n-sources", "3", "--epochs", "1", "--out", out, "-q")
    assert r.code == 0, r.err
    assert {p: p.read_bytes() for p in zoo_dir.iterdir()} == before
    meta = store.read_metadata(out)
    assert meta["kind"] == "star" and len(meta["sources"]) == 3
    assert {s["sha256"] for s in meta["sources"]} == {store.content_hash(p) for p in fashion_mlp_zoo[:3]}


def test_star_model_is_better_connected_than_regular_models(fashion_mlp_zoo, fashion_small):
    """The paper's claim on a small real setting: 5 sources, 2 held-out, narrow MLPs on Fashion-MNIST."""
    from stardomain.barrier import barriers, curve
    from stardomain.permute import align, trace_spec

    states = [store.load_state(p)[0] for p in fashion_mlp_zoo]
    sources, held = states[:5], states[5:]
    torch.manual_seed(100)
    model = models.create("mlp", 10, fashion_small.in_shape, depth=2, width=32)
    recipe = Recipe.from_dict(store.read_metadata(fashion_mlp_zoo[0])["recipe"])
    sl = Starlight(model, sources, fashion_small, StarlightConfig(recipe=recipe), seed=100)
    sl.fit(progress=False)
    star = {k: v.detach().clone() for k, v in sl.model.state_dict().items()}
    spec = trace_spec(model)

    def barrier(a, b):
        b_aligned, _ = align(a, b, spec=spec, model=model, method="weight", seed=0)
        return barriers(curve(a, b_aligned, model=model, dataset=fashion_small, num_points=11, splits=("test",)))["test_loss"]

    regular = [barrier(a, b) for a, b in itertools.combinations(sources, 2)]
    star_source = [barrier(star, s) for s in sources]
    star_held = [barrier(star, h) for h in held]
    rr = statistics.fmean(regular)
    assert rr > 0.02, f"regular–regular barrier {rr:.4f}: the setting shows nothing"
    assert statistics.fmean(star_source) < rr, (star_source, regular)
    assert statistics.fmean(star_held) < rr, (star_held, regular)


def test_activation_matching_uses_the_stars_own_bn_statistics(digits, monkeypatch):
    """Interpolated forwards write their statistics into the star's BN buffers; realign must not match with them."""
    import copy

    import stardomain.permute as permute
    from stardomain.barrier.bn import bn_state, reset_bn
    from stardomain.data import matching_sample

    star = _mlp(0, digits, batchnorm=True)
    source = _mlp(1, digits, batchnorm=True).state_dict()
    config = StarlightConfig(recipe=Recipe(lr=0.05, epochs=1, batch_size=64), matching="activation", matching_samples=256)
    sl = Starlight(star, [source], digits, config)
    for i in range(4):  # training steps at t = 0.9: the buffers now describe the interpolated networks
        sl.step(digits.train_x[64 * i : 64 * (i + 1)], digits.train_y[64 * i : 64 * (i + 1)], [(0, 0.9)], lr=0.05)
    polluted = bn_state(star)
    own = reset_bn(copy.deepcopy(star), matching_sample(digits, 256))
    seen = {}
    real = permute.activation_matching

    def spy(state_a, state_b, **kw):
        seen.update({k: v.clone() for k, v in state_a.items()})
        return real(state_a, state_b, **kw)

    monkeypatch.setattr(permute, "activation_matching", spy)
    sl.realign()
    means = [k for k in own if k.endswith("running_mean") or k.endswith("running_var")]
    assert means
    for k in means:
        assert not torch.allclose(polluted[k], own[k], rtol=0.05), k  # the test can tell the two apart
        torch.testing.assert_close(seen[k], own[k])
        assert torch.equal(bn_state(star)[k], polluted[k])  # the model's buffers are left to finalize_bn


def test_star_seed_is_its_own_stream():
    from stardomain.starlight import star_seed

    seeds = {star_seed(s, tag) for s in range(50) for tag in ("", "n_sources=5", "mu=1")}
    assert len(seeds) == 150 and not seeds & set(range(2000))
    assert star_seed(0) == star_seed(0)
