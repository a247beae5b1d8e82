"""Architectures a researcher brings along: the model matrix of tests/test_own_models.py.

Importable by a fresh interpreter (``PYTHONPATH=tests``) so the CLI tests can name them by
import path (``own_models:build_lnmlp``); ``own_plugin`` registers two of them by name.
Every builder follows the registry signature ``(num_classes, in_shape, *, options)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LNMLP(nn.Module):
    """MLP with LayerNorm + GELU between its layers."""

    def __init__(self, in_features: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.fc1, self.ln1 = nn.Linear(in_features, width), nn.LayerNorm(width)
        self.fc2, self.ln2 = nn.Linear(width, width), nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        x = nn.functional.gelu(self.ln1(self.fc1(x)))
        x = nn.functional.gelu(self.ln2(self.fc2(x)))
        return self.head(x)


class ResBNCNN(nn.Module):
    """Hand-written residual CNN with BatchNorm."""

    def __init__(self, c_in: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.c1, self.bn1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.c2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.bn2(self.c2(torch.relu(self.bn1(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


class TiedMLP(nn.Module):
    """Weight tying: ``fc3.weight`` is ``fc2.weight``."""

    def __init__(self, in_features: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(in_features, width), nn.Linear(width, width), nn.Linear(width, width)
        self.fc3.weight = self.fc2.weight
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.head(torch.relu(self.fc3(torch.relu(self.fc2(x)))))


def _patches(x: Tensor, p: int) -> Tensor:
    """(N, C, H, W) -> (N, H/p * W/p, C*p*p) by reshape/permute: tokens cut from the input."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


class AttentionBlock(nn.Module):
    """Tokens from the input, one nn.MultiheadAttention with a residual, mean over tokens."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int, heads: int) -> None:
        super().__init__()
        c, h, _ = in_shape
        self.p = 2
        self.embed = nn.Linear(c * self.p * self.p, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        t = self.embed(_patches(x, self.p))
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.head(self.ln(t).mean(1))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class TinyViT(nn.Module):
    """Patches by reshape/permute, learned position embedding, 2 pre-LN blocks, mean pooling, a head."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int, heads: int) -> None:
        super().__init__()
        c, h, w = in_shape
        self.p = 2
        self.embed = nn.Linear(c * self.p * self.p, width)
        self.pos = nn.Parameter(0.02 * torch.randn(1, (h // self.p) * (w // self.p), width))
        self.blocks = nn.Sequential(Block(width, heads), Block(width, heads))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        t = self.embed(_patches(x, self.p)) + self.pos
        return self.head(self.ln(self.blocks(t)).mean(1))


class GroupNormCNN(nn.Module):
    """Conv -> GroupNorm(4 groups) -> ReLU, twice."""

    def __init__(self, c_in: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.c1, self.gn1 = nn.Conv2d(c_in, width, 3, padding=1), nn.GroupNorm(4, width)
        self.c2, self.gn2 = nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(4, width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.gn1(self.c1(x)))
        x = torch.relu(self.gn2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


class ViewCNN(nn.Module):
    """A CNN that flattens with ``x.view(x.size(0), -1)`` (breaks under channels_last)."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int) -> None:
        super().__init__()
        c, h, w = in_shape
        self.conv, self.bn = nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * h * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.view(x.size(0), -1))


class PerChannel(nn.Module):
    """Free per-unit parameters: a (C,) scale on a hidden vector and a (C, 1, 1) shift on a feature map."""

    def __init__(self, c_in: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, width, 3, padding=1)
        self.shift = nn.Parameter(0.1 * torch.randn(width, 1, 1))
        self.fc = nn.Linear(width, width)
        self.scale = nn.Parameter(1 + 0.1 * torch.randn(width))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv(x) + self.shift).mean((2, 3))
        return self.head(torch.relu(self.fc(x) * self.scale))


class MisalignedParam(nn.Module):
    """A (C,) parameter multiplied into a (N, C, H, W) map: broadcasting puts it on W, not C."""

    def __init__(self, c_in: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, width, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(8))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.conv(x) * self.gain).mean((2, 3)))


class HandAttention(nn.Module):
    """q/k/v written by hand, heads split with view/transpose."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int, heads: int) -> None:
        super().__init__()
        c, _, _ = in_shape
        self.heads = heads
        self.embed = nn.Linear(c * 4, width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        t = self.embed(_patches(x, 2))
        n, s, d = t.shape
        hd = d // self.heads
        q = self.q(t).view(n, s, self.heads, hd).transpose(1, 2)
        k = self.k(t).view(n, s, self.heads, hd).transpose(1, 2)
        v = self.v(t).view(n, s, self.heads, hd).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1) @ v
        t = t + self.o(a.transpose(1, 2).reshape(n, s, d))
        return self.head(t.mean(1))


class MixedHeads(HandAttention):
    """Like HandAttention, but sums the heads together: every head has its own unit order, so this is refused."""

    def forward(self, x: Tensor) -> Tensor:
        t = self.embed(_patches(x, 2))
        n, s, d = t.shape
        hd = d // self.heads
        v = self.v(t).view(n, s, self.heads, hd)
        return self.head(torch.cat([v.sum(2), v.sum(2)], -1).mean(1))


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, written out."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TVResNet(nn.Module):
    """A torchvision-style ResNet: stem, two stages of BasicBlocks, adaptive pooling, flatten, fc."""

    def __init__(self, c_in: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width, width, 1))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------- builders (registry signature)
def build_lnmlp(num_classes: int, in_shape: tuple[int, ...], *, width: int = 16) -> nn.Module:
    """MLP with LayerNorm + GELU (works on images and on tabular (F,) inputs)."""
    return LNMLP(math.prod(in_shape), num_classes, width)


def build_resbn(num_classes: int, in_shape: tuple[int, ...], *, width: int = 8) -> nn.Module:
    return ResBNCNN(in_shape[0], num_classes, width)


def build_tied(num_classes: int, in_shape: tuple[int, ...], *, width: int = 16) -> nn.Module:
    return TiedMLP(math.prod(in_shape), num_classes, width)


def build_attention(num_classes: int, in_shape: tuple[int, ...], *, width: int = 16, heads: int = 2) -> nn.Module:
    return AttentionBlock(in_shape, num_classes, width, heads)


def build_vit(num_classes: int, in_shape: tuple[int, ...], *, width: int = 16, heads: int = 2) -> nn.Module:
    return TinyViT(in_shape, num_classes, width, heads)


def build_groupnorm(num_classes: int, in_shape: tuple[int, ...], *, width: int = 8) -> nn.Module:
    return GroupNormCNN(in_shape[0], num_classes, width)


def build_viewcnn(num_classes: int, in_shape: tuple[int, ...], *, width: int = 4) -> nn.Module:
    return ViewCNN(in_shape, num_classes, width)


def build_perchannel(num_classes: int, in_shape: tuple[int, ...], *, width: int = 8) -> nn.Module:
    return PerChannel(in_shape[0], num_classes, width)


def build_tvresnet(num_classes: int, in_shape: tuple[int, ...], *, width: int = 8) -> nn.Module:
    return TVResNet(in_shape[0], num_classes, width)


def build_misaligned(num_classes: int, in_shape: tuple[int, ...], *, width: int = 8) -> nn.Module:
    return MisalignedParam(in_shape[0], num_classes, width)


def build_handattention(num_classes: int, in_shape: tuple[int, ...], *, width: int = 16, heads: int = 2) -> nn.Module:
    return HandAttention(in_shape, num_classes, width, heads)


def build_mixedheads(num_classes: int, in_shape: tuple[int, ...], *, width: int = 16, heads: int = 2) -> nn.Module:
    return MixedHeads(in_shape, num_classes, width, heads)


def make_blobs():
    """A dataset factory (``dataset: own_models:make_blobs``): 3 Gaussian blobs in 4 features."""
    from stardomain.data import Dataset

    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(3, 4, generator=g)
    y_train, y_test = torch.randint(0, 3, (120,), generator=g), torch.randint(0, 3, (30,), generator=g)
    x_train = centers[y_train] + torch.randn(120, 4, generator=g)
    x_test = centers[y_test] + torch.randn(30, 4, generator=g)
    return Dataset(
        name="blobs",
        train_x=x_train,
        train_y=y_train,
        test_x=x_test,
        test_y=y_test,
        num_classes=3,
        in_shape=(4,),
        mean=(0.0,) * 4,
        std=(1.0,) * 4,
        classes=["a", "b", "c"],
        augment=False,
    )


def make_nothing():
    return [1, 2, 3]


class DataDependent(nn.Module):
    """Python control flow on a tensor value: vmap cannot run it (the batched paths must refuse it)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc(x.flatten(1))
        return out if out.sum() > 0 else -out


class TokenClassifier(nn.Module):
    """Token ids in (an nn.Embedding first), mean over tokens, a hidden layer, logits: it cannot run on floats."""

    def __init__(self, vocab: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.emb(ids).mean(1))))


def build_tokens(num_classes: int, in_shape: tuple[int, ...], *, vocab: int = 17, width: int = 8) -> nn.Module:
    return TokenClassifier(vocab, width, num_classes)


def make_vit_config(num_classes: int, in_shape: tuple[int, ...]):
    """A user's Hugging Face config (hf:own_models:make_vit_config): stardomain builds the model from it."""
    import transformers

    return transformers.ViTConfig(
        image_size=in_shape[-1],
        patch_size=4,
        num_channels=in_shape[0],
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )


def make_bert_config(num_classes: int, in_shape: tuple[int, ...]):
    import transformers

    return transformers.BertConfig(
        vocab_size=17, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=64
    )


def build_no_shape(num_classes: int) -> nn.Module:
    """A builder without the registry signature (no in_shape): refused by its signature, never called."""
    raise AssertionError("a builder whose signature does not fit is never called")
