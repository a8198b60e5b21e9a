"""A roofline model of GPU time for a step whose ops were counted on any device. *Modeled*, not measured.

Each dispatched kernel (an aten op that is not a view) is charged

    t_op = max(launch, flops_op / peak_rate(dtype, op), bytes_op / bandwidth)

and the step's time is the sum over its kernels. ``launch`` is the interval at which eager
PyTorch can issue kernels: a kernel that would finish sooner still occupies that slot, which
is what makes small-batch steps launch-bound. ``bytes_op`` is what the op reads plus what it
writes, each tensor once, so the model assumes no cache reuse between ops and perfect overlap
within one op: it is a lower bound on a real GPU, not a prediction of one. See
``docs/roofline.md`` for the figures and their sources.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GPUSpec:
    """Peak rates of one GPU; dense (no sparsity) tensor-core figures."""

    name: str
    bandwidth: float        # bytes / s, HBM
    launch_seconds: float   # eager dispatch + launch interval per kernel
    fp64: float             # FLOP/s, FP64 tensor core
    fp32: float             # FLOP/s, FP32 on CUDA cores (no tensor cores)
    tf32: float             # FLOP/s, TF32 tensor core
    half: float             # FLOP/s, BF16/FP16 tensor core


# NVIDIA H100 SXM5 80 GB datasheet: HBM3 3.35 TB/s; FP64 tensor 67 TFLOP/s; FP32 67 TFLOP/s;
# TF32 tensor 494.7 TFLOP/s, BF16/FP16 tensor 989.4 TFLOP/s (dense). Launch interval: 4 µs, the
# middle of the 3–5 µs per-op cost of eager PyTorch on CUDA.
H100_SXM = GPUSpec(
    name="H100 SXM5 80GB",
    bandwidth=3.35e12,
    launch_seconds=4e-6,
    fp64=67e12,
    fp32=67e12,
    tf32=494.7e12,
    half=989.4e12,
)


@dataclass(frozen=True)
class KernelRecord:
    """One counted kernel: what it computes and moves, and whether it is a convolution."""

    name: str
    flops: int
    bytes: int
    dtype: torch.dtype
    is_conv: bool


@dataclass(frozen=True)
class ModeledTime:
    """Modeled seconds of a step and how many kernels each bound decided."""

    seconds: float
    launch_bound: int
    memory_bound: int
    compute_bound: int

    def as_dict(self) -> dict[str, float | int]:
        return {"modeled_seconds": self.seconds, "launch_bound_kernels": self.launch_bound,
                "memory_bound_kernels": self.memory_bound, "compute_bound_kernels": self.compute_bound}


def peak_rate(spec: GPUSpec, dtype: torch.dtype, is_conv: bool, tf32_matmul: bool = False) -> float:
    """FLOP/s a kernel of this dtype can reach.

    PyTorch runs fp32 convolutions on TF32 tensor cores by default (``cudnn.allow_tf32``) but fp32
    matmuls in full fp32 unless ``torch.set_float32_matmul_precision("high")`` (``tf32_matmul``).
    """
    if dtype in (torch.bfloat16, torch.float16):
        return spec.half
    if dtype == torch.float64:
        return spec.fp64
    return spec.tf32 if (is_conv or tf32_matmul) else spec.fp32


def modeled_time(
    kernels: Iterable[KernelRecord], spec: GPUSpec = H100_SXM, tf32_matmul: bool = False
) -> ModeledTime:
    """Sum of ``max(launch, compute, memory)`` over the kernels (module docstring)."""
    seconds = 0.0
    bounds = {"launch": 0, "memory": 0, "compute": 0}
    for kernel in kernels:
        compute = kernel.flops / peak_rate(spec, kernel.dtype, kernel.is_conv, tf32_matmul)
        memory = kernel.bytes / spec.bandwidth
        candidates = {"launch": spec.launch_seconds, "memory": memory, "compute": compute}
        bound = max(candidates, key=candidates.__getitem__)
        bounds[bound] += 1
        seconds += candidates[bound]
    return ModeledTime(seconds, bounds["launch"], bounds["memory"], bounds["compute"])
