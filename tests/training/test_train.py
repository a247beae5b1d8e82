"""Training: the recipe reaches the accuracies the brief asks for, runs are bit-reproducible,
and a resumed run ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from stardomain import models
from stardomain.errors import StardomainError
from stardomain.training.loop import Recipe, default_recipe, lr_at, train_model


def _train(ds, seed, recipe, **kw):
    torch.manual_seed(seed)
    m = models.create("mlp", ds.num_classes, ds.in_shape, depth=2, width=64)
    hist = train_model(m, ds, recipe, seed=seed, progress=False, **kw)
    return m, hist


def test_same_seed_same_weights_bit_identical(digits):
    recipe = default_recipe("digits").replace(epochs=3)
    a, _ = _train(digits, 7, recipe)
    b, _ = _train(digits, 7, recipe)
    c, _ = _train(digits, 8, recipe)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(
        a.state_dict()["net.0.weight"] if "net.0.weight" in a.state_dict() else next(iter(a.parameters())),
        c.state_dict()["net.0.weight"] if "net.0.weight" in c.state_dict() else next(iter(c.parameters())),
    )


def test_resumed_run_equals_uninterrupted(digits, tmp_path):
    recipe = default_recipe("digits").replace(epochs=4, optimizer="sgd")
    full, full_hist = _train(digits, 3, recipe)

    class Stop(Exception):
        pass

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Stop

    resume = tmp_path / ".state.safetensors"
    with pytest.raises(Stop):
        _train(digits, 3, recipe, resume_path=resume, on_epoch=stop_after_two)
    # the state file holds epoch 1 (written before the hook of epoch 2 ran? no: after epoch 1 and not yet epoch 2)
    resumed, hist = _train(digits, 3, recipe, resume_path=resume)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    for (k, va), vb in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(va, vb), k
    assert hist[-1]["test_loss"] == full_hist[-1]["test_loss"]
    assert not resume.exists()  # training state is removed once the run is complete


def test_adam_resume_and_determinism(digits, tmp_path):
    recipe = default_recipe("digits", optimizer="adam").replace(epochs=3)
    full, _ = _train(digits, 1, recipe)

    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(digits, 1, recipe, resume_path=tmp_path / ".s.safetensors", on_epoch=stop)
    resumed, _ = _train(digits, 1, recipe, resume_path=tmp_path / ".s.safetensors")
    for va, vb in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(va, vb)


def test_digits_default_recipe_reaches_95_percent(digits):
    torch.manual_seed(0)
    m = models.create("mlp", digits.num_classes, digits.in_shape)
    hist = train_model(m, digits, default_recipe("digits"), seed=0, progress=False)
    assert hist[-1]["test_acc"] >= 0.95


def test_resnet20_loss_falls_on_cifar_shaped_data():
    """Real CIFAR training is a GPU job; here the CIFAR-shaped pipeline (augmentation included) must learn."""
    from stardomain.data import Dataset

    g = torch.Generator().manual_seed(0)
    n, k = 256, 4
    y = torch.randint(0, k, (n,), generator=g)
    # class signal: a coloured blob per class plus noise, robust to crops and flips
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.5
    x[torch.arange(n), y % 3, 8:24, 8:24] += 1.5 * (1 + (y // 3)).float().view(-1, 1, 1)
    ds = Dataset(
        name="synthetic",
        train_x=x,
        train_y=y,
        test_x=x[:64],
        test_y=y[:64],
        num_classes=k,
        in_shape=(3, 32, 32),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        classes=[str(i) for i in range(k)],
        augment=True,
    )
    torch.manual_seed(0)
    m = models.create("resnet20", k, (3, 32, 32))
    hist = train_model(m, ds, Recipe(epochs=4, batch_size=64, lr=0.05), seed=0, progress=False)
    assert hist[-1]["train_loss"] < 0.6 * hist[0]["train_loss"]


def test_recipe_validation():
    with pytest.raises(StardomainError, match="unknown optimizer 'rmsprop'; use one of sgd, adam"):
        Recipe(optimizer="rmsprop")
    with pytest.raises(StardomainError, match="unknown key"):
        Recipe.from_dict({"lr": 0.1, "momentun": 0.9})
    with pytest.raises(StardomainError, match="epochs"):
        Recipe(epochs=0)


def test_cosine_schedule_decays_to_zero():
    r = Recipe(lr=0.1, epochs=10)
    assert lr_at(r, 0, 100, 10) == pytest.approx(0.1)
    assert lr_at(r, 50, 100, 10) == pytest.approx(0.05)
    assert lr_at(r, 100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    r2 = Recipe(lr=0.1, epochs=10, warmup_epochs=1)
    assert lr_at(r2, 4, 100, 10) == pytest.approx(0.05)


@pytest.mark.slow
@pytest.mark.optional_data
def test_fashion_mnist_mlp_reaches_87_percent():
    from paths import FASHION_DIR, FASHION_SKIP

    if FASHION_DIR is None:
        pytest.skip(FASHION_SKIP)
    from stardomain.data import load_dataset

    ds = load_dataset("fashion_mnist")
    torch.manual_seed(0)
    m = models.create("mlp", ds.num_classes, ds.in_shape)
    hist = train_model(m, ds, default_recipe("fashion_mnist").replace(epochs=4), seed=0, progress=False)
    assert hist[-1]["test_acc"] >= 0.87


def test_initial_state_of_a_dict_without_a_seed_is_one_line():
    """zoo.initial_state indexed meta["seed"] of a metadata dict: a raw KeyError where none is recorded."""
    from stardomain.checkpoints import store
    from stardomain.training import zoo
    from stardomain.training.loop import seed_everything

    arch = dict(models.create("mlp", 10, (64,), depth=1, width=8).arch)
    with pytest.raises(StardomainError, match=r"^a checkpoint records no seed: its initial weights cannot be rebuilt$"):
        zoo.initial_state({"arch": arch})
    with pytest.raises(StardomainError, match=r"needs an integer 'seed' and an 'arch' mapping .*\(got seed 3, arch NoneType\)"):
        zoo.initial_state({"seed": 3})
    with pytest.raises(StardomainError, match=r"\(got seed '3', arch dict\)"):
        zoo.initial_state({"seed": "3", "arch": arch})
    seed_everything(3)
    expected = store.build_model(arch).state_dict()
    got = zoo.initial_state({"seed": 3, "arch": arch})
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
