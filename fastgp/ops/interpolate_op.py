"""``fastgp::interpolate``: the random mix of real and fake samples on which the penalty is taken.

Formula, per sample ``i`` of a batch of ``B``::

    x̂_i = ε_i · real_i + (1 − ε_i) · fake_i

Backward (``g`` the gradient of the output)::

    ∂/∂real_i = ε_i · g_i
    ∂/∂fake_i = (1 − ε_i) · g_i
    ∂/∂ε_i    = Σ_j g_ij · (real_ij − fake_ij)

The backward is written with differentiable torch ops, so the op may sit inside a
``create_graph=True`` region (double backward).
"""

# No `from __future__ import annotations` here: custom_op reads these hints to build the schema.
import torch

from fastgp.ops._checks import batch_view_shape


@torch.library.custom_op("fastgp::interpolate", mutates_args=())
def _interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    eps_b = eps.to(real.dtype).view(batch_view_shape(real))
    # Written as the canonical two products and a sum so that the result rounds exactly like
    # the usual `eps * real + (1 - eps) * fake` line it replaces. The output takes real's
    # memory format (contiguous or channels_last), like the fake kernel below says.
    out = torch.empty_like(real)
    torch.add(eps_b * real, (1 - eps_b) * fake, out=out)
    return out


@_interpolate.register_fake
def _(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(real)


def _setup_context(ctx, inputs, output) -> None:
    real, fake, eps = inputs
    ctx.save_for_backward(real, fake, eps)


def _backward(ctx, grad_out: torch.Tensor):
    real, fake, eps = ctx.saved_tensors
    eps_b = eps.to(real.dtype).view(batch_view_shape(real))
    need_real, need_fake, need_eps = ctx.needs_input_grad
    grad_real = grad_out * eps_b if need_real else None
    grad_fake = grad_out * (1 - eps_b) if need_fake else None
    grad_eps = None
    if need_eps:
        per_element = grad_out * (real - fake)
        grad_eps = per_element.sum(dim=tuple(range(1, real.dim()))).to(eps.dtype)
    return grad_real, grad_fake, grad_eps


_interpolate.register_autograd(_backward, setup_context=_setup_context)
