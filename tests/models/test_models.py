"""Tests for stardomain.models: shapes, gradients, parameter counts, fx tracing, rebuilding."""

from __future__ import annotations

import json

import pytest
import torch
import torch.fx
from torch import nn

from stardomain.errors import StardomainError
from stardomain.models import available_models, create, model_info, register

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}
ALL = ["densenet40_12", "mlp", "resnet18", "resnet18_imagenet", "resnet20", "vgg11", "vgg16", "vgg19", "wrn"]
# Smaller variants keep the per-shape forward/backward checks fast on CPU while still
# exercising every code path (downsampling, projection shortcuts, skipped pools).
SMALL = {
    "mlp": {"width": 32},
    "vgg11": {"width": 0.125},
    "vgg16": {"width": 0.125},
    "vgg19": {"width": 0.125},
    "resnet20": {},
    "resnet18": {"width": 0.125},
    "resnet18_imagenet": {"width": 0.125},
    "wrn": {"depth": 10, "width": 1},
    "densenet40_12": {"depth": 13, "growth": 4},
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_all_models() -> None:
    assert available_models() == ALL


@pytest.mark.parametrize("size", ["small", "default"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name: str, shape_name: str, size: str) -> None:
    torch.manual_seed(0)
    shape = SHAPES[shape_name]
    model = create(name, 7, shape, **(SMALL[name] if size == "small" else {}))
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(dim=1).sum().backward()
    for key, p in model.named_parameters():
        assert p.grad is not None, key
        assert torch.isfinite(p.grad).all(), key


def test_vgg_skips_pools_on_small_inputs() -> None:
    pools = lambda m: sum(isinstance(x, nn.MaxPool2d) for x in m.modules())  # noqa: E731
    assert pools(create("vgg16", 10, (3, 32, 32), width=0.125)) == 5
    assert pools(create("vgg16", 10, (1, 28, 28), width=0.125)) == 4  # 28-14-7-3-1
    assert pools(create("vgg16", 10, (1, 8, 8), width=0.125)) == 3  # 8-4-2-1


@pytest.mark.parametrize(
    "name,options,expected,tol",
    [
        ("resnet18", {}, 11_170_000, 0.005),
        ("resnet20", {}, 270_000, 0.02),
        ("densenet40_12", {}, 1_000_000, 0.10),
        ("vgg16", {"batchnorm": True}, 14_700_000, 0.02),
        ("wrn", {"depth": 16, "width": 4}, 2_750_000, 0.02),
    ],
)
def test_parameter_counts_match_published(name: str, options: dict, expected: int, tol: float) -> None:
    count = n_params(create(name, 10, (3, 32, 32), **options))
    assert abs(count - expected) / expected < tol, count


def test_imagenet_resnet18_is_torchvisions_layout() -> None:
    """11,689,512 parameters at 1000 classes (torchvision's resnet18); the stem downsamples 224 -> 56."""
    model = create("resnet18_imagenet", 1000, (3, 224, 224))
    assert n_params(model) == 11_689_512
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    assert stem(torch.zeros(1, 3, 224, 224)).shape == (1, 64, 56, 56)


def test_mlp_default_is_784_512_512_512_10() -> None:
    model = create("mlp", 10, (1, 28, 28))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 512), (512, 512), (512, 10)]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm1d) for m in create("mlp", 10, (1, 28, 28), batchnorm=True).modules())


@pytest.mark.parametrize("name", ALL)
def test_fx_traceable_and_equal(name: str) -> None:
    torch.manual_seed(0)
    model = create(name, 10, (3, 32, 32), **SMALL[name]).eval()
    traced = torch.fx.symbolic_trace(model)
    ops = {n.op for n in traced.graph.nodes}
    assert "call_module" in ops
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


def test_fx_graph_has_residual_add_and_cat() -> None:
    import operator

    def targets(name: str, **options) -> set:
        graph = torch.fx.symbolic_trace(create(name, 10, (3, 32, 32), **options)).graph
        return {n.target for n in graph.nodes if n.op == "call_function"}

    assert operator.add in targets("resnet20")
    assert operator.add in targets("wrn", depth=10, width=1)
    assert torch.cat in targets("densenet40_12", depth=13, growth=4)


ALLOWED_LEAVES = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
)


@pytest.mark.parametrize("name", ALL)
def test_fx_graph_uses_only_known_layers(name: str) -> None:
    """The permutation tracer understands these layers plus add/cat; nothing else appears."""
    import operator

    model = create(name, 10, (3, 32, 32), **SMALL[name])
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    for node in graph.nodes:
        if node.op == "call_module":
            assert isinstance(modules[node.target], ALLOWED_LEAVES), (node.target, modules[node.target])
        elif node.op == "call_function":
            assert node.target in (operator.add, torch.cat), node.target
        else:
            assert node.op in ("placeholder", "output"), node.op


def test_wrn_dropout_option() -> None:
    assert not any(isinstance(m, nn.Dropout) for m in create("wrn", 10, (3, 32, 32), depth=10, width=1).modules())
    model = create("wrn", 10, (3, 32, 32), depth=10, width=1, dropout=0.3)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 3
    torch.fx.symbolic_trace(model)


@pytest.mark.parametrize("name", ALL)
def test_arch_round_trip(name: str) -> None:
    model = create(name, 5, (1, 28, 28), **SMALL[name])
    arch = json.loads(json.dumps(model.arch))
    assert arch["name"] == name and arch["num_classes"] == 5 and arch["in_shape"] == [1, 28, 28]
    assert set(arch["options"]) == set(model_info(name).defaults)
    rebuilt = create(arch["name"], arch["num_classes"], tuple(arch["in_shape"]), **arch["options"])
    a, b = model.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    assert rebuilt.arch == model.arch


def test_arch_records_defaults() -> None:
    assert create("wrn", 10, (3, 32, 32), depth=10).arch["options"] == {"depth": 10, "width": 4, "dropout": 0.0, "init": "paper"}


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_weights(name: str) -> None:
    torch.manual_seed(123)
    a = create(name, 10, (3, 32, 32), **SMALL[name]).state_dict()
    torch.manual_seed(123)
    b = create(name, 10, (3, 32, 32), **SMALL[name]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(124)
    c = create(name, 10, (3, 32, 32), **SMALL[name]).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_bn_init_and_conv_init() -> None:
    model = create("resnet20", 10, (3, 32, 32), init="kaiming")  # the paper's ResNet init is PyTorch's default (test_fidelity)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    conv = model.layers[2][0].conv2  # 64 out channels, fan_out = 64*9
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.01


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(StardomainError) as err:
        create("resnet50", 10, (3, 32, 32))
    msg = str(err.value)
    assert "\n" not in msg and "resnet50" in msg
    assert all(n in msg for n in ALL)


def test_name_is_case_insensitive() -> None:
    assert create("MLP", 10, (1, 8, 8), width=4).arch["name"] == "mlp"


def test_unknown_option_names_accepted_ones() -> None:
    with pytest.raises(StardomainError) as err:
        create("mlp", 10, (1, 28, 28), widht=3)
    msg = str(err.value)
    assert "widht" in msg and all(k in msg for k in ("depth", "width", "batchnorm")) and "\n" not in msg


@pytest.mark.parametrize(
    "name,options,needle",
    [
        ("mlp", {"depth": "3"}, "depth"),
        ("mlp", {"width": 0}, "width"),
        ("mlp", {"batchnorm": 1}, "batchnorm"),
        ("vgg16", {"width": -1}, "width"),
        ("wrn", {"depth": 17}, r"6n\+4"),
        ("wrn", {"width": 2.5}, "width"),
        ("densenet40_12", {"depth": 41}, "depth"),
        ("resnet20", {"width": float("nan")}, "width"),
    ],
)
def test_invalid_option_values(name: str, options: dict, needle: str) -> None:
    with pytest.raises(StardomainError, match=needle) as err:
        create(name, 10, (3, 32, 32), **options)
    assert "\n" not in str(err.value)


def test_bad_shapes_and_classes() -> None:
    with pytest.raises(StardomainError, match="at least 4x4"):
        create("densenet40_12", 10, (1, 2, 2))
    with pytest.raises(StardomainError, match="in_shape"):
        create("mlp", 10, (28, 0))
    with pytest.raises(StardomainError, match="needs 3-d inputs"):
        create("resnet20", 10, (28, 28))
    assert create("mlp", 10, (7,), depth=1, width=4)(torch.randn(2, 7)).shape == (2, 10)  # tabular: any shape
    with pytest.raises(StardomainError, match="num_classes"):
        create("mlp", 0, (1, 28, 28))


def test_register_custom_model() -> None:
    from stardomain.models import registry

    try:
        _register_and_use()
    finally:
        registry._REGISTRY.pop("test_linear_probe_model", None)
    assert available_models() == ALL


def _register_and_use() -> None:
    @register("test_linear_probe_model")
    def build(num_classes: int, in_shape: tuple[int, int, int], *, scale: float = 1.0) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes))

    model = create("test_linear_probe_model", 3, (1, 4, 4), scale=2)
    assert model.arch["options"] == {"scale": 2, "init": "paper"}  # paper: a builder of yours keeps its own init
    assert "test_linear_probe_model" in available_models()
    with pytest.raises(StardomainError, match="already registered"):
        register("test_linear_probe_model")(build)
