"""Host-side launchers of the Triton kernels: layout, output allocation, grid choice, device.

Each launcher is the body of one ``torch.library.triton_op`` (:mod:`fastgp.ops.triton.ops`), so
its annotations are the op's schema. Kernels launch through ``torch.library.wrap_triton``: eager
calls launch them directly, and on CUDA ``torch.compile`` sees each launch as a node it can
optimize. The CPU interpreter (``TRITON_INTERPRET=1``) cannot run on fake tensors: there the
ops stay opaque to tracing (:mod:`fastgp.ops.triton.ops`) and :func:`_run` refuses fake tensors.

Inputs and outputs follow the layout rule of :mod:`fastgp.ops._layout` (the fake kernels use
the same functions). Every launch runs with its tensors' device current (:func:`device_guard`):
Triton launches on the current CUDA device and its stream, so without the guard a rank whose
tensors live on ``cuda:1`` while ``cuda:0`` is current would launch on GPU 0.
"""

# No `from __future__ import annotations` here: triton_op reads these hints to build the schema.
import contextlib
import functools

import numpy as np
import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from fastgp.ops._checks import accumulation_dtype, check_same_device
from fastgp.ops._layout import matching_pair, output_like, sample_major
from fastgp.ops.triton import kernels

ELEMENTWISE_BLOCK = 1024
# The split reduction wants a few programs per SM, so that every SM has work when the batch
# is small; more waves than that only add partial sums.
PROGRAMS_PER_SM = 4
# SM count assumed where there is no CUDA device to ask (the CPU interpreter): an H100's, so
# the interpreter plans the same multi-split grids as a GPU and the tests cover them.
FALLBACK_SM_COUNT = 132
MAX_SPLITS = 256
#: Whether the kernels run in Triton's CPU interpreter: under ``TRITON_INTERPRET=1`` (read when
#: triton decorated them) ``@triton.jit`` gives an interpreted function instead of a JITFunction.
INTERPRETED = not isinstance(kernels.interpolate_kernel, triton.runtime.JITFunction)


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """The context that makes ``device`` current for a launch: ``torch.cuda.device`` for a CUDA
    device, nothing for the CPU tensors of the interpreter."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``, asked of the device; ``FALLBACK_SM_COUNT`` off
    CUDA."""
    if device.type != "cuda":
        return FALLBACK_SM_COUNT
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_sm_count(index: int) -> int:
    # Cached per device index: every norm launch asks, and the answer never changes.
    return torch.cuda.get_device_properties(index).multi_processor_count


def _launch(kernel):
    """``kernel`` as launched: through ``wrap_triton``, which a ``triton_op``'s trace records."""
    return torch.library.wrap_triton(kernel)


def _run(kernel, grid: tuple[int, ...], device: torch.device, *args, **constexprs) -> None:
    """Launch ``kernel`` on ``grid`` with ``device`` current (module docstring).

    Under the interpreter a launch on fake tensors would dereference their (absent) storage: it
    is refused with the reason instead (the ops' fake kernels never launch anything).
    """
    if INTERPRETED and any(is_fake(a) for a in args if isinstance(a, torch.Tensor)):
        raise RuntimeError("fastgp: Triton kernels under TRITON_INTERPRET=1 cannot run on fake "
                           "tensors; trace the fastgp_triton op, not its launcher")
    with device_guard(device):
        _launch(kernel)[grid](*args, **constexprs)


def _launch_elementwise(kernel, device: torch.device, n: int, *args, **constexprs) -> None:
    """One program per ``ELEMENTWISE_BLOCK`` of the ``n`` elements; nothing to do when ``n = 0``."""
    if n:
        _run(kernel, (triton.cdiv(n, ELEMENTWISE_BLOCK),), device, *args, **constexprs,
             BLOCK=ELEMENTWISE_BLOCK)


def _acc(dtype: torch.dtype):
    return tl.float64 if accumulation_dtype(dtype) == torch.float64 else tl.float32


def split_float(value: float) -> tuple[float, float]:
    """``value ≈ hi + lo`` with ``hi`` and ``lo`` fp32 (see the kernels' module docstring)."""
    hi = float(np.float32(value))
    return hi, float(np.float32(value - hi))


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    check_same_device("interpolate", real=real, fake=fake, eps=eps)
    real, fake = matching_pair(real, fake, ("real", "fake"))
    out = output_like(real)
    n = real.numel()
    _launch_elementwise(kernels.interpolate_kernel, real.device, n, real, fake,
                        eps.to(real.dtype).contiguous(), out, n, n // real.shape[0],
                        ACC=_acc(real.dtype))
    return out


def interpolate_backward(grad: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_same_device("interpolate_backward", grad=grad, eps=eps)
    grad = sample_major(grad)
    grad_real, grad_fake = output_like(grad), output_like(grad)
    n = grad.numel()
    _launch_elementwise(kernels.interpolate_backward_kernel, grad.device, n, grad,
                        eps.to(grad.dtype).contiguous(), grad_real, grad_fake, n,
                        n // grad.shape[0], ACC=_acc(grad.dtype))
    return grad_real, grad_fake


def reduction_plan(n_samples: int, sample_size: int,
                   sms: int) -> tuple[int, int, int, int]:
    """``(BLOCK_B, BLOCK_M, chunk, n_splits)`` of the sum-of-squares split reduction on a device
    with ``sms`` streaming multiprocessors.

    Small samples: a 2-D tile of many samples × the whole (padded) sample. Large samples:
    one sample per program row and ``n_splits`` programs per sample, up to
    ``PROGRAMS_PER_SM · sms`` programs in all. Split ``s`` covers columns
    ``[s·chunk, min((s+1)·chunk, M))``; ``n_splits = ⌈M / chunk⌉``, so the splits tile the
    sample exactly. A sample without elements (``M = 0``) gets one empty split: norm 0.
    """
    columns = max(sample_size, 1)
    block_m = min(triton.next_power_of_2(columns), 2048)
    block_b = max(1, min(4096 // block_m, triton.next_power_of_2(n_samples)))
    row_programs = triton.cdiv(n_samples, block_b)
    wanted = max(1, min(MAX_SPLITS, PROGRAMS_PER_SM * sms // row_programs))
    n_splits = max(1, min(wanted, triton.cdiv(columns, block_m)))
    chunk = triton.cdiv(triton.cdiv(columns, n_splits), block_m) * block_m
    n_splits = triton.cdiv(columns, chunk)
    return block_b, block_m, chunk, n_splits


def norm_penalty(grad: torch.Tensor, weight: float, center: float,
                 one_sided: bool) -> tuple[torch.Tensor, torch.Tensor]:
    grad = sample_major(grad)
    acc = accumulation_dtype(grad.dtype)
    n_samples = grad.shape[0]
    sample_size = grad.numel() // n_samples
    block_b, block_m, chunk, n_splits = reduction_plan(n_samples, sample_size,
                                                       sm_count(grad.device))
    partial = torch.empty(n_samples, n_splits, device=grad.device, dtype=acc)
    norms = torch.empty(n_samples, device=grad.device, dtype=acc)
    penalty = torch.empty((), device=grad.device, dtype=acc)
    grid = (triton.cdiv(n_samples, block_b), n_splits)
    block_s = triton.next_power_of_2(n_splits)
    _run(kernels.sum_of_squares_kernel, grid, grad.device,
         grad, partial, n_samples, sample_size, chunk, n_splits,
         ACC=_acc(grad.dtype), BLOCK_B=block_b, BLOCK_M=block_m)
    _run(kernels.penalty_finalize_kernel, (1,), grad.device,
         partial, norms, penalty, n_samples, n_splits, *split_float(weight), *split_float(center),
         ONE_SIDED=one_sided, ACC=_acc(grad.dtype), BLOCK_B=max(1, 4096 // block_s),
         BLOCK_S=block_s)
    return penalty, norms


def norm_penalty_backward(
    grad: torch.Tensor, norms: torch.Tensor, grad_penalty: torch.Tensor | None,
    grad_norms: torch.Tensor | None, weight: float, center: float, one_sided: bool,
) -> torch.Tensor:
    check_same_device("norm_penalty_backward", grad=grad, norms=norms,
                      grad_penalty=grad_penalty, grad_norms=grad_norms)
    grad = sample_major(grad)
    out = output_like(grad)
    n = grad.numel()
    if grad_penalty is None:
        grad_penalty = torch.zeros((), device=grad.device, dtype=norms.dtype)
    # Upstream gradients may arrive expanded or strided (autograd, AOTAutograd): the kernel
    # indexes them as dense vectors.
    norms = norms.contiguous()
    grad_norms = grad_norms.contiguous() if grad_norms is not None else None
    _launch_elementwise(
        kernels.norm_penalty_backward_kernel, grad.device, n, grad, norms,
        grad_norms if grad_norms is not None else norms, grad_penalty, out, n,
        n // grad.shape[0], grad.shape[0], *split_float(weight), *split_float(center),
        ONE_SIDED=one_sided, HAS_GRAD_NORMS=grad_norms is not None, ACC=_acc(grad.dtype))
    return out


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float,
                    channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    check_same_device("bias_leaky_relu", x=x, bias=bias)
    x = sample_major(x)
    out, mask = output_like(x), output_like(x, torch.bool)
    n = x.numel()
    has_bias = bias is not None
    _launch_elementwise(
        kernels.bias_leaky_relu_kernel, x.device, n, x,
        bias.contiguous() if has_bias else x, out, mask.view(torch.uint8), n,
        x.stride(channel_dim), x.shape[channel_dim], *split_float(negative_slope),
        HAS_BIAS=has_bias, ACC=_acc(x.dtype))
    return out, mask


def leaky_relu_mask_backward(grad: torch.Tensor, mask: torch.Tensor,
                             negative_slope: float) -> torch.Tensor:
    check_same_device("leaky_relu_mask_backward", grad=grad, mask=mask)
    grad, mask = matching_pair(grad, mask, ("grad", "mask"))
    out = output_like(grad)
    n = grad.numel()
    _launch_elementwise(kernels.leaky_relu_mask_backward_kernel, grad.device, n, grad,
                        mask.view(torch.uint8), out, n, *split_float(negative_slope),
                        ACC=_acc(grad.dtype))
    return out
