"""The CUDA path gives what the CPU path gives (within float tolerance); skipped without a GPU.

Run on a GPU machine with ``python -m pytest -q -m cuda``. Batches are fixed and drawn on the CPU
(``FixedBatches``) wherever CPU and CUDA results are compared, because the tensor loader draws its
order on the data's device and the two devices' generators give different streams.
Tolerances: convolutions may run in TF32 on Ampere+ GPUs (torch's default for cuDNN), about 1e-3
relative; fp32 matmuls do not.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from stardomain import barrier, models
from stardomain.checkpoints import store
from stardomain.data import TensorLoader, augment_batch
from stardomain.training.loop import Recipe, train_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

CUDA = "cuda"


class _Batches(list):
    """A list of batches with the loader interface train_model needs (settable ``epoch``)."""

    epoch = 0


class FixedBatches:
    """A dataset whose training batches are fixed and drawn on the CPU: identical on every device."""

    def __init__(self, ds, batch_size: int = 64, n_batches: int = 6) -> None:
        self.ds = ds
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(ds.train_y), generator=g)[: batch_size * n_batches]
        self.batches = [(ds.train_x[i], ds.train_y[i]) for i in order.split(batch_size)]
        self._placed: dict[str, list] = {}  # moved once per device (host-device copies synchronise)

    def __getattr__(self, name):
        return getattr(self.ds, name)

    def train_loader(self, batch_size, augment, seed, device="cpu"):
        key = str(device)
        if key not in self._placed:
            self._placed[key] = [(x.to(device), y.to(device)) for x, y in self.batches]
        return _Batches(self._placed[key])


def _trained(ds, recipe, device, arch="mlp", **options):
    torch.manual_seed(0)
    m = models.create(arch, ds.num_classes, ds.in_shape, **options)
    hist = train_model(m, ds, recipe, seed=0, device=device, progress=False)
    return m.cpu(), hist


def _close_states(a, b, rtol, atol):
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(vb.cpu(), va.cpu(), rtol=rtol, atol=atol, msg=k)


def test_training_matches_cpu(digits):
    data = FixedBatches(digits)
    recipe = Recipe(lr=0.05, epochs=2, batch_size=64, augment=False)
    cpu_mlp, h_cpu = _trained(data, recipe, "cpu", depth=2, width=64)
    gpu_mlp, h_gpu = _trained(data, recipe, CUDA, depth=2, width=64)
    _close_states(cpu_mlp, gpu_mlp, rtol=1e-4, atol=1e-5)
    assert h_gpu[-1]["test_loss"] == pytest.approx(h_cpu[-1]["test_loss"], rel=1e-4)
    cpu_res, r_cpu = _trained(data, recipe, "cpu", "resnet20", width=0.25)
    gpu_res, r_gpu = _trained(data, recipe, CUDA, "resnet20", width=0.25)
    _close_states(cpu_res, gpu_res, rtol=2e-2, atol=2e-3)
    assert r_gpu[-1]["test_loss"] == pytest.approx(r_cpu[-1]["test_loss"], rel=1e-2)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_matches_fp32_and_keeps_fp32_weights(digits, precision):
    data = FixedBatches(digits, n_batches=20)  # 80 steps: both runs near convergence, where they can agree
    recipe = Recipe(lr=0.05, epochs=4, batch_size=64, augment=False)
    ref, h_ref = _trained(data, recipe, "cpu", "resnet20", width=0.25)
    low, h_low = _trained(data, recipe.replace(precision=precision), CUDA, "resnet20", width=0.25)
    assert all(v.dtype == ref.state_dict()[k].dtype for k, v in low.state_dict().items())
    assert abs(h_low[-1]["train_loss"] - h_ref[-1]["train_loss"]) < 0.1  # both ~0.1 nats: rounding, not divergence
    assert abs(h_low[-1]["test_acc"] - h_ref[-1]["test_acc"]) < 0.04


def test_fast_path_channels_last_compile_bf16_matches_fp32(digits):
    data = FixedBatches(digits)
    recipe = Recipe(lr=0.05, epochs=2, batch_size=64, augment=False)
    ref, h_ref = _trained(data, recipe, CUDA, "resnet20", width=0.25)
    fast, h_fast = _trained(data, recipe.replace(precision="bf16", channels_last=True, compile=True), CUDA, "resnet20", width=0.25)
    assert all(v.is_contiguous() for v in fast.state_dict().values())  # handed back NCHW
    assert not any(k.startswith("_orig_mod") for k in fast.state_dict())
    assert h_fast[-1]["train_loss"] == pytest.approx(h_ref[-1]["train_loss"], rel=0.05)


def test_loader_stays_on_the_gpu_without_host_syncs(digits):
    x, y = digits.train_x[:512], digits.train_y[:512]
    fill = (-1.0,)
    loader = TensorLoader(x, y, batch_size=64, augment=True, fill=fill, seed=3, device=CUDA)
    it = iter(loader)
    first = next(it)  # the epoch's permutation is drawn here
    torch.cuda.set_sync_debug_mode("error")
    try:
        rest = list(it)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    batches = [first, *rest]
    assert all(xb.is_cuda and yb.is_cuda for xb, yb in batches)
    # one permutation of the data per epoch
    assert torch.cat([yb for _, yb in batches]).sort().values.cpu().tolist() == y.sort().values.tolist()
    # the device kernel is the CPU kernel: same offsets and flips give the same crops
    xs = x[:32]
    on_gpu = augment_batch(xs.to(CUDA), torch.Generator(device=CUDA).manual_seed(1), fill=torch.tensor(fill, device=CUDA))
    on_cpu = augment_batch(xs, torch.Generator(device=CUDA).manual_seed(1), fill=fill)
    assert torch.equal(on_gpu.cpu(), on_cpu)


def _sync_warnings(fn) -> int:
    """How many synchronising CUDA calls ``fn`` makes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_training_epoch_syncs_a_fixed_number_of_times_not_per_step(digits):
    """.item() only at the end of an epoch: an epoch of 4 steps and one of 16 synchronise equally often."""

    def run(n_batches: int) -> int:
        data = FixedBatches(digits, batch_size=32, n_batches=n_batches)
        torch.manual_seed(0)
        m = models.create("resnet20", digits.num_classes, digits.in_shape, width=0.25).to(CUDA)
        recipe = Recipe(lr=0.05, epochs=1, batch_size=32, augment=False, precision="bf16")
        train_model(m, data, recipe, seed=0, device=CUDA, progress=False)  # warm-up: cudnn autotuning, allocator
        return _sync_warnings(lambda: train_model(m, data, recipe, seed=0, device=CUDA, progress=False))

    assert run(4) == run(16)


def test_barrier_curve_matches_cpu(digits):
    torch.manual_seed(0)
    model = models.create("resnet20", digits.num_classes, digits.in_shape, width=0.25)
    a = model.state_dict()
    torch.manual_seed(1)
    b = models.create("resnet20", digits.num_classes, digits.in_shape, width=0.25).state_dict()
    kw = dict(num_points=5, bn_samples=512, eval_train_samples=400, seed=0)
    on_cpu = barrier.curve(a, b, model=model, dataset=digits, device="cpu", **kw)
    on_gpu = barrier.curve(a, b, model=model, dataset=digits, device=CUDA, **kw)
    for m in barrier.METRICS:
        assert on_gpu.metric(m) == pytest.approx(on_cpu.metric(m), rel=1e-3, abs=2e-3), m


def test_starlight_steps_match_cpu(digits):
    from stardomain.starlight import Starlight, StarlightConfig

    xb, yb = digits.train_x[:128], digits.train_y[:128]
    torch.manual_seed(0)
    star = models.create("mlp", digits.num_classes, digits.in_shape, depth=2, width=32)
    sources = []
    for s in (1, 2):
        torch.manual_seed(s)
        sources.append(models.create("mlp", digits.num_classes, digits.in_shape, depth=2, width=32).state_dict())
    runs = {}
    for device in ("cpu", CUDA):
        m = copy.deepcopy(star)
        sl = Starlight(m, sources, digits, StarlightConfig(recipe=Recipe(lr=0.1, epochs=1), matching="none"), device=device)
        for _step, pairs in enumerate(([(0, 0.3)], [(1, 0.7)], [(0, 0.5), (1, 0.1)])):
            sl.step(xb.to(device), yb.to(device), pairs, lr=0.1)
        runs[device] = m.cpu()
    _close_states(runs["cpu"], runs[CUDA], rtol=1e-4, atol=1e-5)


def test_checkpoint_saved_on_cpu_loads_on_cuda_and_back(digits, tmp_path):
    torch.manual_seed(0)
    model = models.create("resnet20", digits.num_classes, digits.in_shape, width=0.25).eval()
    x = digits.test_x[:64]
    store.save(tmp_path / "cpu", model, {"kind": "test"})
    on_gpu = store.load(tmp_path / "cpu", device=CUDA)
    assert all(v.is_cuda for v in on_gpu.state_dict().values())
    with torch.no_grad():
        torch.testing.assert_close(on_gpu(x.to(CUDA)).cpu(), model(x), rtol=1e-3, atol=1e-3)
    store.save(tmp_path / "gpu", on_gpu, {"kind": "test"})
    back = store.load(tmp_path / "gpu", device="cpu")
    for (k, va), vb in zip(model.state_dict().items(), back.state_dict().values()):
        assert vb.device.type == "cpu" and torch.equal(va, vb), k
    assert F.cross_entropy(back(x), digits.test_y[:64]).isfinite()
