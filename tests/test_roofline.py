"""The roofline model charges each kernel max(launch, compute, memory) with the stated figures."""

import pytest
import torch

from fastgp.perf.roofline import H100_SXM, KernelRecord, modeled_time, peak_rate


def test_each_bound_by_hand():
    kernels = [
        KernelRecord("tiny", flops=0, bytes=100, dtype=torch.float32, is_conv=False),
        KernelRecord("copy", flops=0, bytes=int(3.35e9), dtype=torch.float32, is_conv=False),
        KernelRecord("conv", flops=int(494.7e9), bytes=0, dtype=torch.float32, is_conv=True),
    ]
    result = modeled_time(kernels)
    # 4 µs launch + 1 ms for 3.35 GB at 3.35 TB/s + 1 ms for 494.7 GFLOP at TF32 494.7 TFLOP/s
    assert result.seconds == pytest.approx(4e-6 + 1e-3 + 1e-3)
    assert (result.launch_bound, result.memory_bound, result.compute_bound) == (1, 1, 1)


def test_peak_rates_follow_pytorch_defaults():
    assert peak_rate(H100_SXM, torch.float32, is_conv=True) == H100_SXM.tf32
    assert peak_rate(H100_SXM, torch.float32, is_conv=False) == H100_SXM.fp32
    assert peak_rate(H100_SXM, torch.float32, is_conv=False, tf32_matmul=True) == H100_SXM.tf32
    assert peak_rate(H100_SXM, torch.bfloat16, is_conv=False) == H100_SXM.half
    assert peak_rate(H100_SXM, torch.float64, is_conv=True) == H100_SXM.fp64


def test_empty_step_costs_nothing():
    assert modeled_time([]).seconds == 0.0
