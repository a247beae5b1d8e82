"""The BMA aligns its sources through the one alignment step of a pair (permute.pair.align_on_data): a model that
takes token ids is traced and checked on the data's own ids, as `align` and `barrier` do, never on random floats."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from own_models import TokenClassifier

from stardomain.bma.study import align_sources
from stardomain.permute.pair import align_on_data


def _token_data() -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(
        name="tokens",
        num_classes=3,
        in_shape=(6,),
        train_x=torch.randint(0, 17, (64, 6), generator=g),
        train_y=torch.randint(0, 3, (64,), generator=g),
        test_x=torch.randint(0, 17, (32, 6), generator=g),
        test_y=torch.randint(0, 3, (32,), generator=g),
    )


def test_bma_aligns_a_token_id_model_like_a_pair_does() -> None:
    torch.manual_seed(0)
    star, source = TokenClassifier(17, 8, 3), TokenClassifier(17, 8, 3)
    ds = _token_data()
    (aligned,) = align_sources(star.state_dict(), star, [source.state_dict()], ds, align="weight")
    pair, match, _ = align_on_data(star.state_dict(), source.state_dict(), model=star, dataset=ds, method="weight")
    assert match.check == "passed"
    assert aligned.keys() == pair.keys() and all(torch.equal(aligned[k], pair[k]) for k in pair)
