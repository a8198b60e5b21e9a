"""The triton_op wrappers (the compile-visible CUDA path) run eagerly on CPU under the interpreter.

They launch the same kernels as the `fastgp::` custom ops; here their values and autograd
(gradcheck, gradgradcheck) are checked against the composite in fp64. Tracing them needs CUDA
(see the module docstring of fastgp.ops.triton.compiled_ops).
"""

import pytest
import torch
from backends import AVAILABLE
from helpers import FP64_TOL, relative_error

from fastgp import ops

pytestmark = pytest.mark.skipif("triton" not in AVAILABLE, reason="Triton interpreter unavailable")


@pytest.fixture(scope="module")
def triton_ops():
    import fastgp.ops.triton.compiled_ops  # noqa: F401

    return torch.ops.fastgp_triton


def _random(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_values_match_composite(triton_ops):
    real, fake, eps = _random((3, 4, 5), 1), _random((3, 4, 5), 2), torch.rand(3, dtype=torch.float64)
    assert relative_error(triton_ops.interpolate(real, fake, eps),
                          ops.interpolate(real, fake, eps, backend="torch")) <= FP64_TOL
    penalty, norms = triton_ops.norm_penalty(real, 0.1, 1.0, False)
    expected_penalty, expected_norms = ops.norm_penalty(real, 0.1, 1.0, False, backend="torch")
    assert relative_error(penalty, expected_penalty) <= FP64_TOL
    assert relative_error(norms, expected_norms) <= FP64_TOL
    bias = _random((4,), 3)
    out, mask = triton_ops.bias_leaky_relu(real, bias, 0.2, 1)
    expected_out, expected_mask = ops.bias_leaky_relu(real, bias, 0.2, 1, backend="torch")
    assert relative_error(out, expected_out) <= FP64_TOL and torch.equal(mask, expected_mask)


def test_autograd_contracts(triton_ops):
    real = _random((3, 2, 4), 1).requires_grad_(True)
    fake = _random((3, 2, 4), 2).requires_grad_(True)
    eps = torch.rand(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(triton_ops.interpolate, (real, fake, eps))
    assert torch.autograd.gradgradcheck(triton_ops.interpolate, (real, fake, eps))

    def penalty_and_norms(g):
        return triton_ops.norm_penalty(g, 3.0, 1.0, True)

    assert torch.autograd.gradcheck(penalty_and_norms, (real,))
    assert torch.autograd.gradgradcheck(penalty_and_norms, (real,))

    x = _random((3, 4, 2), 4)
    bias = _random((4,), 5).requires_grad_(True)
    with torch.no_grad():  # away from the kink, where finite differences break
        x += 0.05 * torch.sign(x + bias.view(1, 4, 1))
    x.requires_grad_(True)

    def activation(x, bias):
        return triton_ops.bias_leaky_relu(x, bias, 0.2, 1)[0]

    assert torch.autograd.gradcheck(activation, (x, bias))
    assert torch.autograd.gradgradcheck(activation, (x, bias))
