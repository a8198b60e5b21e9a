"""The layout helpers of fastgp/ops/_layout.py (the ops' layout rule itself is checked on every
op, implementation and layout by tests/test_op_contract.py)."""

import pytest
import torch
from op_cases import tensor

from fastgp.ops._layout import matching_pair, same_addressing


def test_matching_pair_copies_only_the_second_input():
    a = tensor("channels_last", 1)
    b = tensor("contiguous", 2)
    matched_a, matched_b = matching_pair(a, b)
    assert matched_a is a and same_addressing(matched_a, matched_b)
    assert torch.equal(matched_b, b) and matched_b.is_contiguous(memory_format=torch.channels_last)
    assert matching_pair(b, b.clone())[1].data_ptr() != b.data_ptr()  # same layout: no copy
    same = b.clone()
    assert matching_pair(b, same)[1] is same
    with pytest.raises(ValueError, match=r"grad and mask must have the same shape, got \(2, 3\) "
                                         r"and \(3, 2\)"):
        matching_pair(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.bool), ("grad", "mask"))


def test_same_addressing_ignores_size_one_strides():
    a = torch.zeros(2, 3, 1, 1)
    odd = a.as_strided((2, 3, 1, 1), (3, 1, 7, 5))
    assert odd.is_contiguous() and same_addressing(a, odd)
    b = torch.zeros(2, 4, 3)
    assert not same_addressing(b.transpose(1, 2), torch.zeros(2, 3, 4))
