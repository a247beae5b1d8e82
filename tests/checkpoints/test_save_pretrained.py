"""save_pretrained folders as checkpoints (issue 32): read through the closed list of transformers classes,
evaluate_pair on raw HF models, tracing what default configs bring, refusals in one line."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from pretrained_helpers import digits, gpt2, token_ids, train_and_save, vit  # noqa: E402

import stardomain as sd  # noqa: E402
from stardomain.checkpoints import store  # noqa: E402
from stardomain.errors import StardomainError  # noqa: E402
from stardomain.permute import trace_spec  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    return {k: train_and_save(k, 0, root / k, steps=3) for k in ("vit", "gpt2")}


def test_folder_loads_as_the_same_function(folders):
    ds = digits()
    x = ds.test_x[:16]
    for kind, folder in folders.items():
        model = sd.load_checkpoint(folder)
        meta = model.meta
        assert meta["arch"]["name"] == "hf:pretrained" and meta["pretrained"]["architecture"].endswith("Classification")
        assert meta["assumed"] and meta["sha256"] == store.content_hash(folder)
        ref = vit(0) if kind == "vit" else gpt2(0)
        ref.load_state_dict(model.model.state_dict())
        with torch.no_grad():
            want = ref.eval()(pixel_values=x).logits if kind == "vit" else ref.eval()(input_ids=token_ids(x)).logits
            assert torch.allclose(model(x), want, atol=1e-6)


def test_evaluate_pair_on_raw_hf_models_and_folders(tmp_path, folders):
    ds = digits()
    a, b = vit(0).eval(), vit(1).eval()
    kw = dict(points=3, eval_train_samples=64, eval_test_samples=64)
    for align in ("none", "weight"):  # a ModelOutput is read for its logits; the spec is traced on the data
        pair = sd.evaluate_pair(a.state_dict(), b.state_dict(), model=a, dataset=ds, align=align, **kw)
        assert set(pair.barriers) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert pair.function_check == "passed"
    pair = sd.evaluate_pair(a.state_dict(), b.state_dict(), model=a, dataset=ds, align="weight", example_input=ds.train_x[:4], **kw)
    assert pair.function_check == "passed"
    other = train_and_save("vit", 1, tmp_path / "vit1", steps=2)
    m = sd.load_checkpoint(folders["vit"])
    pair = sd.evaluate_pair(m.state_dict(), sd.load_checkpoint(other).state_dict(), model=m, dataset=ds, align="weight", **kw)
    assert pair.spec_coverage > 0.9 and pair.l2_aligned <= pair.l2


def test_token_id_builder_aligned_on_integer_ids():
    """A user model taking token ids (no float quantiser) is traced on the data's ids, never random floats."""

    class Ids(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc, self.out = nn.Embedding(17, 8), nn.Linear(8, 8), nn.Linear(8, 10)

        def forward(self, x):
            return self.out(torch.relu(self.fc(self.emb(x))).mean(1))

    ds = digits()
    ds_ids = type("D", (), {})()
    ids_x, ids_y = token_ids(ds.train_x), ds.train_y
    for name, value in vars(ds).items():
        setattr(ds_ids, name, value)
    ds_ids.train_x, ds_ids.test_x = ids_x, token_ids(ds.test_x)
    torch.manual_seed(0)
    a, b = Ids(), Ids()
    pair = sd.evaluate_pair(
        a.state_dict(), b.state_dict(), model=a, dataset=ds_ids, align="weight", points=3, eval_train_samples=32, eval_test_samples=32
    )
    assert pair.function_check == "passed" and ids_y is not None


def test_gpt2_default_config_traces_with_every_attention():
    import transformers as tf

    ids = torch.randint(0, 17, (2, 16))
    for impl in ("eager", "sdpa"):
        cfg = tf.GPT2Config(vocab_size=17, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=None, eos_token_id=None)
        assert cfg.use_cache  # the default: a key/value cache
        lm = tf.GPT2LMHeadModel(cfg)
        lm.config._attn_implementation = impl
        lm.train()  # dropout on: tracing runs in eval mode and restores the mode
        spec = trace_spec(lm, example_input=ids)
        assert spec.capture == "export" and spec.summary()["covered_share"] > 0.9 and lm.training


class ClsViT(nn.Module):
    """A hand-written CLS-token ViT: fx traces it, but its [:, 0] pooling is refused on fx's graph."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, d, 2, 2)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 17, d))
        self.ln = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2, self.head = nn.Linear(d, 32), nn.Linear(32, d), nn.Linear(d, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1) + self.pos
        h = self.ln(t)
        n, s, d = h.shape
        q, k, v = (f(h).view(n, s, 2, d // 2).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, s, d)
        t = t + self.o(a)
        t = t + self.fc2(torch.relu(self.fc1(self.ln(t))))
        return self.head(t[:, 0])


def test_cls_token_vit_falls_back_to_export():
    model, x = ClsViT().eval(), torch.randn(2, 1, 8, 8)
    with pytest.raises(StardomainError, match="getitem"):
        trace_spec(model, example_input=x, capture="fx")
    spec = trace_spec(model, example_input=x)  # auto: fx's graph refused, export's accepted
    assert spec.capture == "export" and spec.summary()["covered_share"] > 0.9


def test_both_captures_refused_names_both():
    class Sorts(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.out(torch.sort(self.fc(x), dim=-1).values[:, 0:8])

    with pytest.raises(StardomainError) as e:
        trace_spec(Sorts(), example_input=torch.randn(2, 4))
    text = str(e.value)
    assert "\n" not in text
    assert ("torch.fx" in text and "torch.export" in text) or "sort" in text


@pytest.mark.parametrize(
    "problem, needle",
    [
        ("no_config", "without config.json"),
        ("pickled", "safe_serialization"),
        ("unknown_class", "not one stardomain builds"),
        ("auto_map", "remote code"),
        ("misfit", "do not fit"),
    ],
)
def test_bad_folders_refused_in_one_line(tmp_path, folders, problem, needle):
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(folders["vit"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    if problem == "no_config":
        (folder / "config.json").unlink()
    elif problem == "pickled":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    elif problem == "unknown_class":
        cfg["architectures"] = ["EvilForImageClassification"]
    elif problem == "auto_map":
        cfg["auto_map"] = {"AutoModel": "evil.Model"}
    elif problem == "misfit":
        cfg["hidden_size"], cfg["intermediate_size"] = 32, 64
    (folder / "config.json").write_text(json.dumps(cfg)) if problem != "no_config" else None
    with warnings.catch_warnings(), pytest.raises(StardomainError) as e:
        warnings.simplefilter("ignore")
        store.load(folder)
    assert needle in str(e.value) and "\n" not in str(e.value)
