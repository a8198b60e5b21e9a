"""Per-op numbers: bytes moved against the minimum, and CPU time of each backend vs the reference.

``python benchmarks/ops_table.py [--repeats N]`` prints two Markdown tables for the input-gradient
shapes of the benchmark matrix:

1. bytes read + written by the composite (counted with the dispatch-mode counter on the
   composite's own aten ops) and by the reference lines, against the minimum (inputs read once,
   outputs written once: what the fused native/Triton kernels move by construction);
2. median CPU time (interleaved repeats) of ``interpolate`` forward and ``norm_penalty``
   forward + backward for the reference lines, the composite and the native kernels;
3. the *modeled* H100 time (docs/roofline.md) of the reference's kernels and of the fused Triton
   kernels (interpolate: 1 kernel; norm_penalty: split reduction + finalize + backward = 3).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastgp import ops, reference
from fastgp.ops import formulas
from fastgp.ops.backend import native_unavailable_reason
from fastgp.perf.counting import count
from fastgp.perf.roofline import KernelRecord, modeled_time

SHAPES = {"mlp-b256": (256, 2), "mlp-b4096": (4096, 2), "dcgan32-b64": (64, 3, 32, 32),
          "resnet32-b64": (64, 3, 32, 32), "dcgan64-b32": (32, 3, 64, 64)}


def _inputs(shape):
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(shape, generator=generator)
    fake = torch.randn(shape, generator=generator)
    eps = torch.rand(shape[0], generator=generator)
    return real, fake, eps


def _norm_penalty_fwd_bwd(function):
    def run(grad):
        leaf = grad.detach().requires_grad_(True)
        penalty, _ = function(leaf)
        (result,) = torch.autograd.grad(penalty, leaf)
        return result
    return run


def byte_rows() -> list[str]:
    rows = ["| case | op | reference MB | composite MB | minimum MB (fused kernels) |",
            "|---|---|---|---|---|"]
    for name, shape in SHAPES.items():
        real, fake, eps = _inputs(shape)
        element_bytes = real.numel() * 4
        # interpolate: read real, fake (and ε), write x̂
        minimum = 3 * element_bytes + eps.numel() * 4
        reference_counts, _ = count(reference.interpolate, real, fake, eps)
        composite_counts, _ = count(formulas.interpolate, real, fake, eps)
        rows.append(f"| {name} | interpolate | {reference_counts.non_gemm_bytes / 1e6:.2f} | "
                    f"{composite_counts.non_gemm_bytes / 1e6:.2f} | {minimum / 1e6:.2f} |")
        # norm_penalty forward + backward: read g, write norms/penalty; read g, write ∂g
        minimum = 4 * element_bytes + 2 * shape[0] * 4
        reference_counts, _ = count(_norm_penalty_fwd_bwd(reference.norm_penalty), real)
        composite_counts, _ = count(_norm_penalty_fwd_bwd(
            lambda g: formulas.norm_penalty(g, 10.0, 1.0, False)), real)
        rows.append(f"| {name} | norm_penalty fwd+bwd | {reference_counts.non_gemm_bytes / 1e6:.2f}"
                    f" | {composite_counts.non_gemm_bytes / 1e6:.2f} | {minimum / 1e6:.2f} |")
    return rows


def modeled_rows() -> list[str]:
    rows = ["| case | op | reference kernels | reference modeled µs | fused kernels | "
            "fused modeled µs |", "|---|---|---|---|---|---|"]
    for name, shape in SHAPES.items():
        real, fake, eps = _inputs(shape)
        element_bytes = real.numel() * 4
        fused = {
            "interpolate": [KernelRecord("interpolate", 0, 3 * element_bytes, torch.float32, False)],
            "norm_penalty fwd+bwd": [
                KernelRecord("sum_of_squares", 0, element_bytes, torch.float32, False),
                KernelRecord("finalize", 0, 2 * shape[0] * 4, torch.float32, False),
                KernelRecord("backward", 0, 2 * element_bytes, torch.float32, False),
            ],
        }
        measured = {
            "interpolate": count(reference.interpolate, real, fake, eps)[0],
            "norm_penalty fwd+bwd": count(_norm_penalty_fwd_bwd(reference.norm_penalty), real)[0],
        }
        for op_name, kernels in fused.items():
            ref = measured[op_name]
            rows.append(f"| {name} | {op_name} | {ref.kernel_count} | "
                        f"{1e6 * modeled_time(ref.kernels).seconds:.1f} | {len(kernels)} | "
                        f"{1e6 * modeled_time(kernels).seconds:.1f} |")
    return rows


def _median_seconds(functions: dict, repeats: int) -> dict[str, float]:
    samples = {name: [] for name in functions}
    for function in functions.values():
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _op_cases(real, fake, eps, backends) -> dict[str, dict]:
    def norm_penalty_with(backend):
        return _norm_penalty_fwd_bwd(lambda g: ops.norm_penalty(g, backend=backend))

    return {
        "interpolate": {
            "reference": lambda: reference.interpolate(real, fake, eps),
            **{b: (lambda b=b: ops.interpolate(real, fake, eps, backend=b)) for b in backends},
        },
        "norm_penalty fwd+bwd": {
            "reference": lambda: _norm_penalty_fwd_bwd(reference.norm_penalty)(real),
            **{b: (lambda b=b: norm_penalty_with(b)(real)) for b in backends},
        },
    }


def time_rows(repeats: int) -> list[str]:
    backends = ["torch"] + (["native"] if native_unavailable_reason(torch.device("cpu")) is None
                            else [])
    header = "| case | op | reference µs | " + " | ".join(f"{b} µs (vs ref)" for b in backends) + " |"
    rows = [header, "|" + "---|" * (3 + len(backends))]
    for name, shape in SHAPES.items():
        real, fake, eps = _inputs(shape)
        cases = _op_cases(real, fake, eps, backends)
        for op_name, functions in cases.items():
            medians = _median_seconds(functions, repeats)
            cells = [f"{1e6 * medians[b]:.0f} ({medians['reference'] / medians[b]:.2f}×)"
                     for b in backends]
            rows.append(f"| {name} | {op_name} | {1e6 * medians['reference']:.0f} | "
                        + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print("\n".join(byte_rows()))
    print()
    print("\n".join(modeled_rows()))
    print()
    print("\n".join(time_rows(args.repeats)))


if __name__ == "__main__":
    main()
