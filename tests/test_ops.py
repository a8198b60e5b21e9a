"""Op-specific behaviour of the fastgp ops: shapes, dtypes, scalars, zero norms, argument checks.

The contract every op keeps on every implementation and layout (formula, strides, opcheck,
gradcheck, devices, empty samples) is tests/test_op_contract.py."""

import pytest
import torch
from backends import AVAILABLE, BACKENDS
from helpers import FP64_TOL, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import plain_penalty

import fastgp
from fastgp import ops


def _random(shape, dtype=torch.float64, seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype).requires_grad_(requires_grad)


# ----------------------------------------------------------------------------- interpolate


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 3), (3, 5), (257, 2), (4, 3, 5, 7), (2, 2, 3, 4, 5),
                                   (2, 3000)])
def test_interpolate_matches_formula(shape, backend):
    real, fake = _random(shape, seed=1), _random(shape, seed=2)
    eps = torch.rand(shape[0], dtype=torch.float64)
    expected = eps.view(-1, *[1] * (len(shape) - 1)) * real
    expected = expected + (1 - eps.view(-1, *[1] * (len(shape) - 1))) * fake
    assert relative_error(ops.interpolate(real, fake, eps, backend=backend), expected) <= FP64_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate_fp32(backend):
    real, fake = _random((64, 3, 5, 5), torch.float32, 1), _random((64, 3, 5, 5), torch.float32, 2)
    eps = torch.rand(64)
    alpha = eps.view(-1, 1, 1, 1)
    out = ops.interpolate(real, fake, eps, backend=backend)
    expected = alpha.double() * real.double() + (1 - alpha.double()) * fake.double()
    assert relative_error(out, expected) <= 1e-7
    if backend == "torch":  # the composite rounds exactly like the canonical line
        assert torch.equal(out, alpha * real + (1 - alpha) * fake)


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate_keeps_channels_last(backend):
    real = _random((2, 3, 4, 5)).to(memory_format=torch.channels_last)
    fake = _random((2, 3, 4, 5), seed=3).to(memory_format=torch.channels_last)
    eps = torch.rand(2, dtype=torch.float64)
    out = ops.interpolate(real, fake, eps, backend=backend)
    assert out.is_contiguous(memory_format=torch.channels_last)
    expected = ops.interpolate(real.contiguous(), fake.contiguous(), eps, backend="torch")
    assert relative_error(out, expected) <= FP64_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate_non_contiguous_and_mixed_layouts(backend):
    base_real, base_fake = _random((5, 8, 6)), _random((5, 8, 6), seed=4)
    real, fake = base_real.transpose(1, 2), base_fake.transpose(1, 2).contiguous()
    eps = torch.rand(5, dtype=torch.float64)
    expected = ops.interpolate(real.contiguous(), fake, eps, backend="torch")
    assert relative_error(ops.interpolate(real, fake, eps, backend=backend), expected) <= FP64_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate_gradcheck_and_gradgradcheck(backend):
    real = _random((3, 2, 4), seed=1, requires_grad=True)
    fake = _random((3, 2, 4), seed=2, requires_grad=True)
    eps = torch.rand(3, dtype=torch.float64, requires_grad=True)

    def mix(r, f, e):
        return ops.interpolate(r, f, e, backend=backend)

    assert torch.autograd.gradcheck(mix, (real, fake, eps))
    assert torch.autograd.gradgradcheck(mix, (real, fake, eps))
    assert torch.autograd.gradgradcheck(mix, (real, fake, eps.detach()))


# ----------------------------------------------------------------------------- norm_penalty


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("one_sided", [False, True])
@pytest.mark.parametrize("center", [1.0, 0.0, 2.5])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (257, 2), (4, 3, 5, 5), (2, 3, 2, 3, 2),
                                   (2, 5000), (1, 70000)])
def test_norm_penalty_matches_plain_torch(shape, center, one_sided, backend):
    grad = _random(shape, seed=7, requires_grad=True)
    penalty, norms = ops.norm_penalty(grad, 10.0, center, one_sided, backend=backend)
    expected_penalty, expected_norms = plain_penalty(grad, 10.0, center, one_sided)
    assert relative_error(norms, expected_norms) <= FP64_TOL
    assert relative_error(penalty, expected_penalty) <= FP64_TOL
    (ours,) = torch.autograd.grad(penalty, grad)
    (theirs,) = torch.autograd.grad(expected_penalty, grad)
    assert relative_error(ours, theirs) <= FP64_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_penalty_fp64_keeps_inexact_scalars_exact(backend):
    grad = _random((6, 9), seed=2, requires_grad=True)
    penalty, norms = ops.norm_penalty(grad, 0.1, 0.3, False, backend=backend)
    expected, _ = plain_penalty(grad, 0.1, 0.3, False)
    assert relative_error(penalty, expected) <= FP64_TOL
    (ours,) = torch.autograd.grad(penalty, grad)
    (theirs,) = torch.autograd.grad(expected, grad)
    assert relative_error(ours, theirs) <= FP64_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_penalty_gradient_of_norms(backend):
    grad = _random((5, 3, 4), seed=4, requires_grad=True)
    weights = torch.rand(5, dtype=torch.float64)
    penalty, norms = ops.norm_penalty(grad, 2.0, 1.0, True, backend=backend)
    expected_penalty, expected_norms = plain_penalty(grad, 2.0, 1.0, True)
    (ours,) = torch.autograd.grad(penalty + (weights * norms).sum(), grad)
    (theirs,) = torch.autograd.grad(expected_penalty + (weights * expected_norms).sum(), grad)
    assert relative_error(ours, theirs) <= FP64_TOL


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 40),
    features=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    weight=st.floats(0.01, 100.0),
    center=st.floats(0.0, 3.0),
    one_sided=st.booleans(),
    backend=st.sampled_from(AVAILABLE),
)
def test_norm_penalty_shape_sweep(batch, features, weight, center, one_sided, backend):
    grad = _random((batch, *features), seed=batch, requires_grad=True)
    penalty, norms = ops.norm_penalty(grad, weight, center, one_sided, backend=backend)
    expected_penalty, expected_norms = plain_penalty(grad, weight, center, one_sided)
    assert relative_error(norms, expected_norms) <= FP64_TOL
    assert relative_error(penalty, expected_penalty) <= FP64_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_penalty_zero_norm_has_zero_subgradient(backend):
    grad = _random((4, 5), requires_grad=False)
    grad[1] = 0.0
    grad.requires_grad_(True)
    penalty, norms = ops.norm_penalty(grad, 10.0, 1.0, False, backend=backend)
    (d_grad,) = torch.autograd.grad(penalty, grad, retain_graph=True)
    assert norms[1] == 0 and torch.isfinite(d_grad).all()
    assert torch.equal(d_grad[1], torch.zeros(5, dtype=torch.float64))
    (d_grad_graph,) = torch.autograd.grad(penalty, grad, create_graph=True)
    (second,) = torch.autograd.grad(d_grad_graph.sum(), grad)
    assert torch.isfinite(second).all()
    # a hand-written sqrt(sum(g²)) really is NaN there: the op's subgradient is what fixes it
    plain = grad.detach().clone().requires_grad_(True)
    hand_written = 10.0 * (((plain**2).sum(dim=1).sqrt() - 1) ** 2).mean()
    (plain_grad,) = torch.autograd.grad(hand_written, plain)
    assert torch.isnan(plain_grad[1]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_penalty_gradcheck_and_gradgradcheck(backend):
    grad = _random((4, 3, 2), seed=3, requires_grad=True)
    for one_sided, center in [(False, 1.0), (True, 1.0), (False, 0.0)]:
        def both_outputs(g, one_sided=one_sided, center=center):
            return ops.norm_penalty(g, 3.0, center, one_sided, backend=backend)
        assert torch.autograd.gradcheck(both_outputs, (grad,))
        assert torch.autograd.gradgradcheck(both_outputs, (grad,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_norm_penalty_16bit_accumulates_in_fp32(dtype, backend):
    grad64 = _random((8, 4096), seed=11)
    grad = grad64.to(dtype).requires_grad_(True)
    penalty, norms = ops.norm_penalty(grad, 10.0, 1.0, False, backend=backend)
    assert penalty.dtype == torch.float32 and norms.dtype == torch.float32
    # Oracle: the same rounded inputs, reduced in fp64. fp32 accumulation is far inside 2e-2.
    expected_penalty, expected_norms = plain_penalty(grad.detach().double(), 10.0, 1.0, False)
    assert relative_error(norms, expected_norms) <= 1e-5
    assert relative_error(penalty, expected_penalty) <= 1e-5
    (d_grad,) = torch.autograd.grad(penalty, grad)
    assert d_grad.dtype == dtype


@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_penalty_channels_last_equals_contiguous(backend):
    grad = _random((3, 4, 5, 6))
    penalty, norms = ops.norm_penalty(grad.to(memory_format=torch.channels_last), 10.0, 1.0,
                                      False, backend=backend)
    expected_penalty, expected_norms = ops.norm_penalty(grad, 10.0, 1.0, False, backend="torch")
    assert relative_error(norms, expected_norms) <= FP64_TOL
    assert relative_error(penalty, expected_penalty) <= FP64_TOL


# ----------------------------------------------------------------------------- bias_leaky_relu


def _plain_bias_leaky_relu(x, bias, slope, channel_dim):
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    y = x if bias is None else x + bias.view(shape)
    return torch.nn.functional.leaky_relu(y, slope), y > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "shape, channel_dim, layout",
    [((5, 7), 1, None), ((3, 4, 5, 6), 1, None), ((3, 4, 5, 6), 1, torch.channels_last),
     ((2, 3, 9), 1, None), ((1, 2, 3, 4, 5), 1, torch.channels_last_3d), ((6, 1000), 1, None)],
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_leaky_relu_matches_plain_torch(shape, channel_dim, layout, with_bias, backend):
    x = _random(shape, seed=3)
    if layout is not None:
        x = x.to(memory_format=layout)
    x.requires_grad_(True)
    bias = _random((shape[channel_dim],), seed=4, requires_grad=True) if with_bias else None
    out, mask = ops.bias_leaky_relu(x, bias, 0.2, channel_dim, backend=backend)
    expected, expected_mask = _plain_bias_leaky_relu(x, bias, 0.2, channel_dim)
    assert mask.dtype == torch.bool and torch.equal(mask, expected_mask)
    assert relative_error(out, expected) <= FP64_TOL
    upstream = _random(shape, seed=5)
    inputs = [x] + ([bias] if with_bias else [])
    ours = torch.autograd.grad(out, inputs, upstream)
    theirs = torch.autograd.grad(expected, inputs, upstream)
    assert relative_error(list(ours), list(theirs)) <= FP64_TOL


def test_bias_leaky_relu_rejects_bad_bias():
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        ops.bias_leaky_relu(torch.randn(2, 4), torch.randn(3))


# ----------------------------------------------------------------------------- input checks


def test_op_wrappers_reject_bad_input():
    real = torch.randn(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        ops.interpolate(real, torch.randn(3, 5), torch.rand(3))
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(3,\)"):
        ops.interpolate(real, real, torch.rand(3, 1))
    with pytest.raises(TypeError, match="floating-point"):
        ops.norm_penalty(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty batch"):
        ops.norm_penalty(torch.randn(0, 4))
    with pytest.raises(ValueError, match="rank >= 2"):
        ops.norm_penalty(torch.randn(4))


def test_ops_are_reexported():
    assert fastgp.interpolate is ops.interpolate
    assert fastgp.norm_penalty is ops.norm_penalty
