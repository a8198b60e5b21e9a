"""Real and fake kernels of every fastgp op return the same layout, for every input layout.

Under ``torch.compile`` the fake kernel's strides are what Inductor plans for and asserts
(``assert_size_stride``): a real kernel that returns other strides fails the compiled step. The
rule (fastgp/ops/_layout.py, mirrored in kernels/include/fastgp/host.h): outputs have the input's
strides when it is contiguous or channels_last, contiguous strides otherwise. Checked here on
every backend this machine runs (Triton through its interpreter), directly and with opcheck.
"""

import itertools

import pytest
import torch
from backends import BACKENDS, implementation
from helpers import FP64_TOL, relative_error
from torch._subclasses.fake_tensor import FakeTensorMode

from fastgp.ops._layout import is_sample_major, matching_pair, output_like, same_addressing

# name -> (shape of a fresh contiguous tensor, view of it with the layout under test)
PAIRABLE = {  # all of shape (2, 3, 4, 5): the two inputs of interpolate / mask backward mix
    "contiguous": ((2, 3, 4, 5), lambda t: t),
    "channels_last": ((2, 3, 4, 5), lambda t: t.to(memory_format=torch.channels_last)),
    "permuted": ((2, 5, 4, 3), lambda t: t.permute(0, 3, 2, 1)),  # dense, not sample-major
    "sliced": ((2, 3, 4, 10), lambda t: t[..., ::2]),  # not dense
    "expanded": ((2, 3, 1, 5), lambda t: t.expand(2, 3, 4, 5)),  # overlapping (stride 0)
}
SINGLE = {  # other ranks and size-1 dimensions
    "transposed 3-D": ((3, 6, 4), lambda t: t.transpose(1, 2)),
    "channels_last_3d": ((2, 3, 2, 3, 2), lambda t: t.to(memory_format=torch.channels_last_3d)),
    # contiguous by PyTorch's rule, which ignores the strides of size-1 dimensions
    "size-1 dims, odd strides": ((2, 3, 1, 1), lambda t: t.as_strided((2, 3, 1, 1), (3, 1, 7, 5))),
    "batch of one, sliced": ((1, 3, 8), lambda t: t[:, :, ::2]),
}
LAYOUTS = PAIRABLE | SINGLE
# every pair of pairable layouts, and each other layout with itself
PAIRS = list(itertools.product(PAIRABLE, repeat=2)) + [(name, name) for name in SINGLE]
MIXED = [("channels_last", "contiguous"), ("contiguous", "channels_last"),
         ("permuted", "channels_last"), ("sliced", "expanded")]


def _tensor(layout, seed=0, dtype=torch.float64):
    shape, view = LAYOUTS[layout]
    base = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return view(base > 0 if dtype == torch.bool else base.to(dtype))


def _eps(batch):
    return torch.rand(batch, generator=torch.Generator().manual_seed(9), dtype=torch.float64)


def _call(op, backend, first, second=None, requires_grad=False):
    """``(op overload, args)`` of one fastgp op of ``backend`` on tensors of the given layouts."""
    ops = implementation(backend)
    a = _tensor(first, seed=1)
    if requires_grad:
        a = a.detach().requires_grad_(True)
    batch, channels = a.shape[0], a.shape[1]
    if op == "interpolate":
        return ops.interpolate.default, (a, _tensor(second, seed=2), _eps(batch))
    if op == "interpolate_backward":
        return ops.interpolate_backward.default, (a, _eps(batch))
    if op == "norm_penalty":
        return ops.norm_penalty.default, (a, 10.0, 1.0, False)
    if op == "norm_penalty_backward":
        norms = a.detach().reshape(batch, -1).norm(dim=1)
        return ops.norm_penalty_backward.default, (
            a, norms, torch.tensor(1.0, dtype=torch.float64), _eps(batch), 10.0, 1.0, False)
    if op == "bias_leaky_relu":
        bias = torch.linspace(-1, 1, channels, dtype=torch.float64)
        return ops.bias_leaky_relu.default, (a, bias, 0.2, 1)
    assert op == "leaky_relu_mask_backward"
    return ops.leaky_relu_mask_backward.default, (
        a, _tensor(second, seed=3, dtype=torch.bool), 0.2)


PAIR_OPS = ["interpolate", "leaky_relu_mask_backward"]
SINGLE_OPS = ["interpolate_backward", "norm_penalty", "norm_penalty_backward", "bias_leaky_relu"]
CALLS = ([(op, a, b) for op in PAIR_OPS for a, b in PAIRS]
         + [(op, a, None) for op in SINGLE_OPS for a in LAYOUTS])


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _fake_run(op, args):
    with FakeTensorMode() as mode:
        fakes = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        return _outputs(op(*fakes))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op_name, first, second", CALLS)
def test_real_and_fake_strides_agree(op_name, first, second, backend):
    op, args = _call(op_name, backend, first, second)
    real = _outputs(op(*args))
    fake = _fake_run(op, args)
    for real_out, fake_out in zip(real, fake, strict=True):
        assert (real_out.shape, real_out.dtype) == (fake_out.shape, fake_out.dtype)
        assert real_out.stride() == fake_out.stride(), (real_out.stride(), fake_out.stride())
    if op_name != "norm_penalty":  # (scalar, (B,)) outputs have a single layout
        # and the layout is the rule's: the first input's when sample-major, else contiguous
        expected = output_like(args[0]).stride()
        assert all(out.stride() == expected for out in real)
        if is_sample_major(args[0]):
            assert real[0].stride() == args[0].stride()
        else:
            assert real[0].is_contiguous()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op_name", PAIR_OPS + SINGLE_OPS)
def test_opcheck_every_layout(op_name, backend):
    pairs = ([*MIXED, *((name, name) for name in LAYOUTS)] if op_name in PAIR_OPS
             else [(name, None) for name in LAYOUTS])
    # norm_penalty_backward is first-order only (no autograd formula): its input needs no grad
    requires_grad = op_name != "norm_penalty_backward"
    for first, second in pairs:
        op, args = _call(op_name, backend, first, second, requires_grad=requires_grad)
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("first, second", PAIRS)
def test_mixed_layouts_give_the_formula(first, second, backend):
    real, fake, eps = _tensor(first, 1), _tensor(second, 2), _eps(_tensor(first).shape[0])
    alpha = eps.view(-1, *[1] * (real.dim() - 1))
    mixed = implementation(backend).interpolate(real, fake, eps)
    assert relative_error(mixed, alpha * real + (1 - alpha) * fake) <= FP64_TOL
    mask = _tensor(second, 3, torch.bool)
    masked = implementation(backend).leaky_relu_mask_backward(real, mask, 0.2)
    assert relative_error(masked, torch.where(mask, real, 0.2 * real)) <= FP64_TOL


def test_matching_pair_copies_only_the_second_input():
    a = _tensor("channels_last", 1)
    b = _tensor("contiguous", 2)
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
