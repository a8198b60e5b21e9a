"""``fastgp::interpolate``: the random mix of real and fake samples on which the penalty is taken.

Formula, per sample ``i`` of a batch of ``B``::

    x̂_i = ε_i · real_i + (1 − ε_i) · fake_i

Backward (``g`` the gradient of the output)::

    ∂/∂real_i = ε_i · g_i
    ∂/∂fake_i = (1 − ε_i) · g_i
    ∂/∂ε_i    = Σ_j g_ij · (real_ij − fake_ij)

When both ``real`` and ``fake`` need gradients, ``fastgp::interpolate_backward`` writes both from
one read of ``g``; its own backward is ``interpolate`` again (the map is linear in ``g``), so
the op may sit inside a ``create_graph=True`` region. The ``backend`` argument is a concrete
backend (``triton``, ``native`` or ``torch``, see :mod:`fastgp.ops.backend`). Outputs take the
layout of :mod:`fastgp.ops._layout` on every backend (``real``'s, or ``grad``'s, when it is
contiguous or channels_last; contiguous otherwise), and so do the fake kernels.
"""

# No `from __future__ import annotations` here: custom_op reads these hints to build the schema.
import torch

from fastgp.ops._checks import batch_view_shape, check_same_device
from fastgp.ops._layout import output_like
from fastgp.ops._registry import op_for


def _composite(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    eps_b = eps.to(real.dtype).view(batch_view_shape(real))
    # The canonical two products and a sum, so the result rounds exactly like the usual
    # `eps * real + (1 - eps) * fake` line, written in the layout every backend returns.
    return torch.add(eps_b * real, (1 - eps_b) * fake, out=output_like(real))


def _check_devices(real, fake, eps) -> None:
    check_same_device("fastgp::interpolate", real=real, fake=fake, eps=eps)


@torch.library.custom_op("fastgp::interpolate", mutates_args=())
def _interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor,
                 backend: str) -> torch.Tensor:
    _check_devices(real, fake, eps)
    if backend == "triton":
        from fastgp.ops.triton import launchers

        return launchers.interpolate(real, fake, eps)
    if backend == "native":
        return torch.ops.fastgp_native.interpolate(real, fake, eps)
    return _composite(real, fake, eps)


@_interpolate.register_fake
def _(real, fake, eps, backend):
    _check_devices(real, fake, eps)
    return output_like(real)


def _check_backward_devices(grad, eps) -> None:
    check_same_device("fastgp::interpolate_backward", grad=grad, eps=eps)


@torch.library.custom_op("fastgp::interpolate_backward", mutates_args=())
def _interpolate_backward(grad: torch.Tensor, eps: torch.Tensor,
                          backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_backward_devices(grad, eps)
    if backend == "triton":
        from fastgp.ops.triton import launchers

        return launchers.interpolate_backward(grad, eps)
    if backend == "native":
        return torch.ops.fastgp_native.interpolate_backward(grad, eps)
    eps_b = eps.to(grad.dtype).view(batch_view_shape(grad))
    return (torch.mul(grad, eps_b, out=output_like(grad)),
            torch.mul(grad, 1 - eps_b, out=output_like(grad)))


@_interpolate_backward.register_fake
def _(grad, eps, backend):
    _check_backward_devices(grad, eps)
    return output_like(grad), output_like(grad)


def save_interpolate_backward(ctx, grad, eps, backend: str) -> None:
    ctx.backend = backend
    # g is needed only for the ε-derivative Σ_j g_ij (u_ij − v_ij)
    ctx.save_for_backward(grad if ctx.needs_input_grad[1] else None, eps)


def interpolate_double_backward(ctx, grad_grad_real, grad_grad_fake):
    """Backward of ``interpolate_backward``: ``interpolate(ū, v̄, ε)`` and ``Σ_j g_ij (ū_ij − v̄_ij)``."""
    grad, eps = ctx.saved_tensors
    if grad_grad_real is None:
        grad_grad_real = torch.zeros_like(grad_grad_fake)
    if grad_grad_fake is None:
        grad_grad_fake = torch.zeros_like(grad_grad_real)
    grad_grad = op_for("interpolate", ctx.backend)(grad_grad_real, grad_grad_fake, eps)
    grad_eps = None
    if ctx.needs_input_grad[1]:
        per_element = grad * (grad_grad_real - grad_grad_fake)
        grad_eps = per_element.sum(dim=tuple(range(1, grad.dim()))).to(eps.dtype)
    return grad_grad, grad_eps


_interpolate_backward.register_autograd(
    lambda ctx, *grads: (*interpolate_double_backward(ctx, *grads), None),
    setup_context=lambda ctx, inputs, output: save_interpolate_backward(ctx, *inputs),
)


def save_interpolate(ctx, real, fake, eps, backend: str) -> None:
    ctx.backend = backend
    ctx.save_for_backward(real, fake, eps)


def interpolate_backward(ctx, grad_out: torch.Tensor):
    """Gradients of ``(real, fake, eps)`` (module docstring)."""
    real, fake, eps = ctx.saved_tensors
    need_real, need_fake, need_eps = ctx.needs_input_grad[:3]
    grad_real = grad_fake = grad_eps = None
    if need_real and need_fake:
        grad_real, grad_fake = op_for("interpolate_backward", ctx.backend)(grad_out, eps)
    elif need_real or need_fake:
        # One output needs one read and one write: a plain product is already minimal.
        eps_b = eps.to(real.dtype).view(batch_view_shape(real))
        if need_real:
            grad_real = grad_out * eps_b
        else:
            grad_fake = grad_out * (1 - eps_b)
    if need_eps:
        per_element = grad_out * (real - fake)
        grad_eps = per_element.sum(dim=tuple(range(1, real.dim()))).to(eps.dtype)
    return grad_real, grad_fake, grad_eps


_interpolate.register_autograd(
    lambda ctx, grad_out: (*interpolate_backward(ctx, grad_out), None),
    setup_context=lambda ctx, inputs, output: save_interpolate(ctx, *inputs),
)
