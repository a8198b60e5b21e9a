"""Host-side launchers of the Triton kernels: layout checks, output allocation, grid choice.

Every launcher takes ``wrap``: False launches the kernel directly (eager, and inside the
``custom_op`` wrappers that ``torch.compile`` treats as opaque — the path that runs under
``TRITON_INTERPRET=1``); True launches it through ``torch.library.wrap_triton`` so that a
``triton_op`` exposes the kernel to ``torch.compile`` on CUDA.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from fastgp.ops._checks import accumulation_dtype
from fastgp.ops.triton import kernels

ELEMENTWISE_BLOCK = 1024
# Grid target of the split reduction: enough programs to fill an H100's 132 SMs several times.
TARGET_PROGRAMS = 4 * 132
MAX_SPLITS = 256


def _launch(kernel, wrap: bool):
    return torch.library.wrap_triton(kernel) if wrap else kernel


def _launch_elementwise(kernel, wrap: bool, n: int, *args, **constexprs) -> None:
    """One program per ``ELEMENTWISE_BLOCK`` of the ``n`` elements; nothing to do when ``n = 0``."""
    if n:
        grid = (triton.cdiv(n, ELEMENTWISE_BLOCK),)
        _launch(kernel, wrap)[grid](*args, **constexprs, BLOCK=ELEMENTWISE_BLOCK)


def _acc(dtype: torch.dtype):
    return tl.float64 if accumulation_dtype(dtype) == torch.float64 else tl.float32


def split_float(value: float) -> tuple[float, float]:
    """``value ≈ hi + lo`` with ``hi`` and ``lo`` fp32 (see the kernels' module docstring)."""
    hi = float(np.float32(value))
    return hi, float(np.float32(value - hi))


def is_sample_major(tensor: torch.Tensor) -> bool:
    """Dense, no overlap, and each sample one contiguous block: offset = i·M + j."""
    if tensor.numel() == 0:
        return True
    if tensor.is_contiguous():
        return True
    if tensor.dim() in (4, 5):
        layout = torch.channels_last if tensor.dim() == 4 else torch.channels_last_3d
        return tensor.is_contiguous(memory_format=layout)
    return False


def sample_major(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if is_sample_major(tensor) else tensor.contiguous()


def _matching_layout(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` and ``b`` sample-major with identical strides, so one flat offset addresses both."""
    a = sample_major(a)
    b = sample_major(b)
    if a.stride() != b.stride():
        a, b = a.contiguous(), b.contiguous()
    return a, b


def interpolate(real, fake, eps, wrap: bool = False) -> torch.Tensor:
    real, fake = _matching_layout(real, fake)
    out = torch.empty_like(real)
    n = real.numel()
    _launch_elementwise(kernels.interpolate_kernel, wrap, n, real, fake,
                        eps.to(real.dtype).contiguous(), out, n, n // real.shape[0],
                        ACC=_acc(real.dtype))
    return out


def interpolate_backward(grad, eps, wrap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    grad = sample_major(grad)
    grad_real, grad_fake = torch.empty_like(grad), torch.empty_like(grad)
    n = grad.numel()
    _launch_elementwise(kernels.interpolate_backward_kernel, wrap, n, grad,
                        eps.to(grad.dtype).contiguous(), grad_real, grad_fake, n,
                        n // grad.shape[0], ACC=_acc(grad.dtype))
    return grad_real, grad_fake


def reduction_plan(n_samples: int, sample_size: int) -> tuple[int, int, int, int]:
    """``(BLOCK_B, BLOCK_M, chunk, n_splits)`` of the sum-of-squares split reduction.

    Small samples: a 2-D tile of many samples × the whole (padded) sample. Large samples:
    one sample per program row and ``n_splits`` programs per sample, enough to fill the grid.
    """
    block_m = min(triton.next_power_of_2(max(sample_size, 1)), 2048)
    block_b = max(1, min(4096 // block_m, triton.next_power_of_2(n_samples)))
    row_programs = triton.cdiv(n_samples, block_b)
    wanted = max(1, min(MAX_SPLITS, TARGET_PROGRAMS // row_programs))
    n_splits = max(1, min(wanted, triton.cdiv(sample_size, block_m)))
    chunk = triton.cdiv(triton.cdiv(sample_size, n_splits), block_m) * block_m
    n_splits = triton.cdiv(sample_size, chunk)
    return block_b, block_m, chunk, n_splits


def norm_penalty(grad, weight: float, center: float, one_sided: bool, wrap: bool = False):
    grad = sample_major(grad)
    acc = accumulation_dtype(grad.dtype)
    n_samples = grad.shape[0]
    sample_size = grad.numel() // n_samples
    block_b, block_m, chunk, n_splits = reduction_plan(n_samples, sample_size)
    partial = torch.empty(n_samples, n_splits, device=grad.device, dtype=acc)
    norms = torch.empty(n_samples, device=grad.device, dtype=acc)
    penalty = torch.empty((), device=grad.device, dtype=acc)
    grid = (triton.cdiv(n_samples, block_b), n_splits)
    block_s = triton.next_power_of_2(n_splits)
    _launch(kernels.sum_of_squares_kernel, wrap)[grid](
        grad, partial, n_samples, sample_size, chunk, n_splits,
        ACC=_acc(grad.dtype), BLOCK_B=block_b, BLOCK_M=block_m)
    _launch(kernels.penalty_finalize_kernel, wrap)[(1,)](
        partial, norms, penalty, n_samples, n_splits, *split_float(weight), *split_float(center),
        ONE_SIDED=one_sided, ACC=_acc(grad.dtype), BLOCK_B=max(1, 4096 // block_s),
        BLOCK_S=block_s)
    return penalty, norms


def norm_penalty_backward(grad, norms, grad_penalty, grad_norms, weight: float, center: float,
                          one_sided: bool, wrap: bool = False) -> torch.Tensor:
    grad = sample_major(grad)
    out = torch.empty_like(grad)
    n = grad.numel()
    if grad_penalty is None:
        grad_penalty = torch.zeros((), device=grad.device, dtype=norms.dtype)
    # Upstream gradients may arrive expanded or strided (autograd, AOTAutograd): the kernel
    # indexes them as dense vectors.
    norms = norms.contiguous()
    grad_norms = grad_norms.contiguous() if grad_norms is not None else None
    _launch_elementwise(
        kernels.norm_penalty_backward_kernel, wrap, n, grad, norms,
        grad_norms if grad_norms is not None else norms, grad_penalty, out, n,
        n // grad.shape[0], grad.shape[0], *split_float(weight), *split_float(center),
        ONE_SIDED=one_sided, HAS_GRAD_NORMS=grad_norms is not None, ACC=_acc(grad.dtype))
    return out


def bias_leaky_relu(x, bias, negative_slope: float, channel_dim: int, wrap: bool = False):
    x = sample_major(x)
    out = torch.empty_like(x)
    mask = torch.empty_like(x, dtype=torch.bool)
    n = x.numel()
    has_bias = bias is not None
    _launch_elementwise(
        kernels.bias_leaky_relu_kernel, wrap, n, x, bias.contiguous() if has_bias else x, out,
        mask.view(torch.uint8), n, x.stride(channel_dim), x.shape[channel_dim],
        *split_float(negative_slope), HAS_BIAS=has_bias, ACC=_acc(x.dtype))
    return out, mask


def leaky_relu_mask_backward(grad, mask, negative_slope: float, wrap: bool = False):
    grad, mask = _matching_layout(grad, mask)
    out = torch.empty_like(grad)
    n = grad.numel()
    _launch_elementwise(kernels.leaky_relu_mask_backward_kernel, wrap, n, grad,
                        mask.view(torch.uint8), out, n, *split_float(negative_slope),
                        ACC=_acc(grad.dtype))
    return out
