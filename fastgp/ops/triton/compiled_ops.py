"""The Triton kernels behind ``torch.library.triton_op`` (``fastgp_triton::``), for CUDA tensors.

``torch.compile`` traces into a ``triton_op`` and sees the kernels launched through
``wrap_triton``, instead of an opaque call. The formulas, fake outputs and autograd are those
of the ``fastgp::`` ops (the autograd functions are shared); only the wrapper differs. Under
``TRITON_INTERPRET=1`` these run eagerly on CPU tensors, but cannot be traced there (their
fake-tensor run reaches the launch), which is why the CPU tests exercise the same kernels
through the ``fastgp::`` custom ops as well.
"""

# No `from __future__ import annotations` here: triton_op reads these hints to build the schema.
import torch
from torch.library import triton_op

from fastgp.ops import bias_act_op, interpolate_op, norm_penalty_op
from fastgp.ops._registry import TRITON_OP
from fastgp.ops.triton import launchers


@triton_op("fastgp_triton::interpolate", mutates_args=())
def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return launchers.interpolate(real, fake, eps, wrap=True)


@triton_op("fastgp_triton::interpolate_backward", mutates_args=())
def interpolate_backward(grad: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return launchers.interpolate_backward(grad, eps, wrap=True)


@triton_op("fastgp_triton::norm_penalty", mutates_args=())
def norm_penalty(grad: torch.Tensor, weight: float, center: float,
                 one_sided: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return launchers.norm_penalty(grad, weight, center, one_sided, wrap=True)


@triton_op("fastgp_triton::norm_penalty_backward", mutates_args=())
def norm_penalty_backward(grad: torch.Tensor, norms: torch.Tensor,
                          grad_penalty: torch.Tensor | None, grad_norms: torch.Tensor | None,
                          weight: float, center: float, one_sided: bool) -> torch.Tensor:
    return launchers.norm_penalty_backward(grad, norms, grad_penalty, grad_norms, weight, center,
                                           one_sided, wrap=True)


@triton_op("fastgp_triton::bias_leaky_relu", mutates_args=())
def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float,
                    channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return launchers.bias_leaky_relu(x, bias, negative_slope, channel_dim, wrap=True)


@triton_op("fastgp_triton::leaky_relu_mask_backward", mutates_args=())
def leaky_relu_mask_backward(grad: torch.Tensor, mask: torch.Tensor,
                             negative_slope: float) -> torch.Tensor:
    return launchers.leaky_relu_mask_backward(grad, mask, negative_slope, wrap=True)


interpolate.register_autograd(
    interpolate_op.interpolate_backward,
    setup_context=lambda ctx, inputs, output: interpolate_op.save_interpolate(
        ctx, *inputs, TRITON_OP),
)
interpolate_backward.register_autograd(
    interpolate_op.interpolate_double_backward,
    setup_context=lambda ctx, inputs, output: interpolate_op.save_interpolate_backward(
        ctx, *inputs, TRITON_OP),
)
norm_penalty.register_autograd(
    lambda ctx, *grads: (norm_penalty_op.norm_penalty_backward(ctx, *grads), None, None, None),
    setup_context=lambda ctx, inputs, output: norm_penalty_op.save_norm_penalty(
        ctx, *inputs, TRITON_OP, output[1]),
)
leaky_relu_mask_backward.register_autograd(
    lambda ctx, grad_grad: (bias_act_op.mask_backward_backward(ctx, grad_grad), None, None),
    setup_context=lambda ctx, inputs, output: bias_act_op.save_mask_backward(
        ctx, *inputs[1:], TRITON_OP),
)
bias_leaky_relu.register_autograd(
    lambda ctx, grad_out, _grad_mask: (*bias_act_op.bias_leaky_relu_backward(ctx, grad_out),
                                       None, None),
    setup_context=lambda ctx, inputs, output: bias_act_op.save_bias_leaky_relu(
        ctx, *inputs[1:], TRITON_OP, output[1]),
)
