"""The ops under torch.compile(fullgraph=True) give the eager results, values and gradients."""

import pytest
import torch
from backends import BACKENDS
from helpers import relative_error

from fastgp import ops


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_ops_match_eager(backend):
    def step(real, fake, eps, bias):
        x_hat = ops.interpolate(real, fake, eps, backend=backend)
        activated, _ = ops.bias_leaky_relu(x_hat, bias, 0.2, 1, backend=backend)
        penalty, norms = ops.norm_penalty(activated, 10.0, 1.0, False, backend=backend)
        return penalty + norms.sum()

    generator = torch.Generator().manual_seed(0)
    real = torch.randn(4, 3, 5, generator=generator, requires_grad=True)
    fake = torch.randn(4, 3, 5, generator=generator, requires_grad=True)
    eps = torch.rand(4, generator=generator)
    bias = torch.randn(3, generator=generator, requires_grad=True)
    inputs = (real, fake, eps, bias)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    eager_value = step(*inputs)
    compiled_value = compiled(*inputs)
    assert relative_error(compiled_value, eager_value) <= 1e-6
    leaves = [real, fake, bias]
    eager_grads = torch.autograd.grad(eager_value, leaves)
    compiled_grads = torch.autograd.grad(compiled_value, leaves)
    assert relative_error(list(compiled_grads), list(eager_grads)) <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_ops_with_permuted_and_mixed_layouts(backend):
    """Inductor asserts that each op's real outputs have its fake kernel's strides: inputs the
    kernels copy (permuted) or bring to one layout (channels_last real, contiguous fake) pass."""
    def step(real, fake, eps, bias):
        x_hat = ops.interpolate(real, fake, eps, backend=backend)
        activated, _ = ops.bias_leaky_relu(x_hat, bias, 0.2, 1, backend=backend)
        penalty, norms = ops.norm_penalty(activated.transpose(2, 3), 10.0, 1.0, False,
                                          backend=backend)
        return penalty + norms.sum()

    generator = torch.Generator().manual_seed(1)
    real = torch.randn(4, 6, 5, 3, generator=generator).permute(0, 3, 2, 1)  # (4, 3, 5, 6)
    fake = torch.randn(4, 3, 5, 6, generator=generator)
    eps = torch.rand(4, generator=generator)
    bias = torch.randn(3, generator=generator)
    for inputs in [(real, fake), (fake.to(memory_format=torch.channels_last), fake.flip(0))]:
        leaves = [t.detach().requires_grad_(True) for t in (*inputs, bias)]
        torch._dynamo.reset()
        compiled = torch.compile(step, fullgraph=True)
        eager_value = step(leaves[0], leaves[1], eps, leaves[2])
        compiled_value = compiled(leaves[0], leaves[1], eps, leaves[2])
        assert relative_error(compiled_value, eager_value) <= 1e-6
        eager_grads = torch.autograd.grad(eager_value, leaves)
        compiled_grads = torch.autograd.grad(compiled_value, leaves)
        assert relative_error(list(compiled_grads), list(eager_grads)) <= 1e-6
