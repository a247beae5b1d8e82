"""Learned matching's ``data=``: a dataset, or an (x, y) pair of tensors; any other tuple or list is refused in one line
(it used to reach the dataset path and fail with an AttributeError)."""

from __future__ import annotations

import pytest
import torch

from stardomain.errors import StardomainError
from stardomain.permute.learned import example_inputs


def test_a_pair_gives_its_inputs_and_a_dataset_its_first_training_inputs(digits):
    x, y = torch.randn(10, 3), torch.arange(10)
    assert torch.equal(example_inputs((x, y), 4), x[:4])
    assert torch.equal(example_inputs([x, y], 4), x[:4])
    assert torch.equal(example_inputs(digits, 4), digits.train_x[:4])
    assert example_inputs(None) is None


@pytest.mark.parametrize("bad", [(torch.zeros(2),), [torch.zeros(2), torch.zeros(2), torch.zeros(2)], (torch.zeros(2), "y")])
def test_another_tuple_or_list_is_refused_in_one_line(bad):
    with pytest.raises(StardomainError, match="an \\(x, y\\) pair of tensors"):
        example_inputs(bad)
