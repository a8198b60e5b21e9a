"""Launch arithmetic of the native CUDA kernels, checked through the CPU build.

``fastgp_native::cuda_split_plan`` is the pure function (kernels/include/fastgp/host.h) that the
CUDA norm reduction calls with ``4 × the device's SM count`` target blocks; the CUDA kernels
themselves only compile here. What runs on a GPU only: asking the device for its SM count.
"""

import pytest
import torch

from fastgp.ops import native

pytestmark = pytest.mark.skipif(native.load_error() is not None, reason=str(native.load_error()))

MIN_SPLIT_SIZE = 4096  # kMinSplitSize: samples are not split below this many elements


def _plan(batch, sample_size, target_blocks):
    return tuple(torch.ops.fastgp_native.cuda_split_plan(batch, sample_size, target_blocks))


@pytest.mark.parametrize("batch", [1, 3, 64, 5000])
@pytest.mark.parametrize("sample_size", [0, 1, 4095, 8192, 70_000, 10**7, 3 * 2**31 + 5])
@pytest.mark.parametrize("sms", [16, 78, 132])
def test_splits_tile_every_sample(batch, sample_size, sms):
    splits, chunk = _plan(batch, sample_size, 4 * sms)
    assert splits >= 1 and splits * chunk >= sample_size
    assert (splits - 1) * chunk < max(sample_size, 1)  # no empty split
    assert batch * splits <= max(4 * sms, batch)  # about the target, never a grid of tiny splits
    assert splits == 1 or chunk >= MIN_SPLIT_SIZE


def test_plan_follows_the_device_sm_count():
    assert _plan(1, 10**7, 4 * 16) == (64, 156_250)
    assert _plan(1, 10**7, 4 * 132) == (528, 18_940)
    assert _plan(2, 10**7, 4 * 132) == (264, 37_879)


def test_sample_without_elements_is_one_empty_split():
    assert _plan(3, 0, 4 * 132) == (1, 0)
