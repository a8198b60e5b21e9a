"""``fastgp::bias_leaky_relu``: bias add + LeakyReLU in one pass, emitting a 1-byte mask.

Forward, with the bias broadcast along ``channel_dim`` (``c`` the channel of element ``j``)::

    y_j    = x_j + b_c
    out_j  = y_j if y_j > 0 else α · y_j
    mask_j = (y_j > 0)                           (torch.bool, one byte per element)

Backward, from the mask alone (the activation is never stored)::

    ∂x_j = g_j if mask_j else α · g_j            (``fastgp::leaky_relu_mask_backward``)
    ∂b_c = Σ_{j in channel c} ∂x_j

LeakyReLU is piecewise linear, so its second derivative is zero almost everywhere: the
backward's own backward is the same mask product (the bias_act pattern of StyleGAN2-ADA, with
one kernel reused for the first and the second derivative). Outputs and mask take the layout of
:mod:`fastgp.ops._layout` on every backend, and so do the fake kernels.
"""

# No `from __future__ import annotations` here: custom_op reads these hints to build the schema.
import torch

from fastgp.ops._checks import check_same_device
from fastgp.ops._layout import output_like
from fastgp.ops._registry import op_for


def _bias_view(bias: torch.Tensor, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    return bias.view(shape)


@torch.library.custom_op("fastgp::bias_leaky_relu", mutates_args=())
def _bias_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float, channel_dim: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_same_device("fastgp::bias_leaky_relu", x=x, bias=bias)
    if backend == "triton":
        from fastgp.ops.triton import launchers

        return launchers.bias_leaky_relu(x, bias, negative_slope, channel_dim)
    if backend == "native":
        return torch.ops.fastgp_native.bias_leaky_relu(x, bias, negative_slope, channel_dim)
    y = x if bias is None else x + _bias_view(bias.to(x.dtype), x, channel_dim)
    mask = torch.gt(y, 0, out=output_like(x, torch.bool))
    return torch.where(mask, y, y * negative_slope, out=output_like(x)), mask


@_bias_leaky_relu.register_fake
def _(x, bias, negative_slope, channel_dim, backend):
    check_same_device("fastgp::bias_leaky_relu", x=x, bias=bias)
    return output_like(x), output_like(x, torch.bool)


@torch.library.custom_op("fastgp::leaky_relu_mask_backward", mutates_args=())
def _leaky_relu_mask_backward(grad: torch.Tensor, mask: torch.Tensor, negative_slope: float,
                              backend: str) -> torch.Tensor:
    check_same_device("fastgp::leaky_relu_mask_backward", grad=grad, mask=mask)
    if backend == "triton":
        from fastgp.ops.triton import launchers

        return launchers.leaky_relu_mask_backward(grad, mask, negative_slope)
    if backend == "native":
        return torch.ops.fastgp_native.leaky_relu_mask_backward(grad, mask, negative_slope)
    return torch.where(mask, grad, grad * negative_slope, out=output_like(grad))


@_leaky_relu_mask_backward.register_fake
def _(grad, mask, negative_slope, backend):
    check_same_device("fastgp::leaky_relu_mask_backward", grad=grad, mask=mask)
    return output_like(grad)


def save_mask_backward(ctx, mask, negative_slope, backend) -> None:
    ctx.negative_slope, ctx.backend = negative_slope, backend
    ctx.save_for_backward(mask)


def mask_backward_backward(ctx, grad_grad: torch.Tensor) -> torch.Tensor:
    """The mask product is linear in ``g`` and self-adjoint: its backward is itself."""
    (mask,) = ctx.saved_tensors
    return op_for("leaky_relu_mask_backward", ctx.backend)(grad_grad, mask, ctx.negative_slope)


_leaky_relu_mask_backward.register_autograd(
    lambda ctx, grad_grad: (mask_backward_backward(ctx, grad_grad), None, None, None),
    setup_context=lambda ctx, inputs, output: save_mask_backward(ctx, *inputs[1:]),
)


def save_bias_leaky_relu(ctx, bias, negative_slope, channel_dim, backend, mask) -> None:
    ctx.negative_slope, ctx.channel_dim, ctx.backend = negative_slope, channel_dim, backend
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.save_for_backward(mask)


def bias_leaky_relu_backward(ctx, grad_out: torch.Tensor):
    """Gradients of ``(x, bias)`` from the saved mask (module docstring)."""
    (mask,) = ctx.saved_tensors
    grad_x = op_for("leaky_relu_mask_backward", ctx.backend)(grad_out, mask, ctx.negative_slope)
    grad_bias = None
    if ctx.needs_input_grad[1]:
        dims = [d for d in range(grad_x.dim()) if d != ctx.channel_dim]
        grad_bias = grad_x.sum(dim=dims).to(ctx.bias_dtype)
    return grad_x, grad_bias


_bias_leaky_relu.register_autograd(
    lambda ctx, grad_out, _grad_mask: (*bias_leaky_relu_backward(ctx, grad_out), None, None, None),
    setup_context=lambda ctx, inputs, output: save_bias_leaky_relu(ctx, *inputs[1:], output[1]),
)
