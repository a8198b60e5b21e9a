"""Compile every fastgp Triton kernel for an H100 (sm_90) without a GPU; run in a subprocess.

Usage: python tests/triton_compile_sm90.py (with TRITON_INTERPRET unset). Prints one line per
kernel and dtype; raises if a kernel fails to compile to a cubin.
"""

import os

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastgp.ops.triton import kernels as k

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "the interpreter must be off to compile"

TARGET = GPUTarget("cuda", 90, 32)
F32 = tl.float32
def signature(spec: str, **constexprs) -> tuple[dict, dict]:
    """``"name:type ..."`` plus constexpr values → (signature, constexprs) for ASTSource."""
    types = dict(item.split(":") for item in spec.split())
    return types | dict.fromkeys(constexprs, "constexpr"), constexprs


ELEMENTS = "n_elements:i64 sample_size:i64"
# Argument types of each kernel as the launchers call it (16-bit inputs where they occur).
CASES = {
    "interpolate_kernel": signature(
        f"real_ptr:*fp32 fake_ptr:*fp32 eps_ptr:*fp32 out_ptr:*fp32 {ELEMENTS}",
        ACC=F32, BLOCK=1024),
    "interpolate_backward_kernel": signature(
        f"grad_ptr:*fp32 eps_ptr:*fp32 grad_real_ptr:*fp32 grad_fake_ptr:*fp32 {ELEMENTS}",
        ACC=F32, BLOCK=1024),
    "sum_of_squares_kernel": signature(
        "grad_ptr:*bf16 partial_ptr:*fp32 n_samples:i32 sample_size:i64 chunk:i32 n_splits:i32",
        ACC=F32, BLOCK_B=2, BLOCK_M=2048),
    "penalty_finalize_kernel": signature(
        "partial_ptr:*fp32 norms_ptr:*fp32 penalty_ptr:*fp32 n_samples:i32 n_splits:i32 "
        "weight_hi:fp32 weight_lo:fp32 center_hi:fp32 center_lo:fp32",
        ONE_SIDED=False, ACC=F32, BLOCK_B=4096, BLOCK_S=1),
    "norm_penalty_backward_kernel": signature(
        "grad_ptr:*fp32 norms_ptr:*fp32 grad_norms_ptr:*fp32 grad_penalty_ptr:*fp32 "
        f"out_ptr:*fp32 {ELEMENTS} n_samples:i32 weight_hi:fp32 weight_lo:fp32 center_hi:fp32 "
        "center_lo:fp32", ONE_SIDED=True, HAS_GRAD_NORMS=True, ACC=F32, BLOCK=1024),
    "bias_leaky_relu_kernel": signature(
        "x_ptr:*fp16 bias_ptr:*fp16 out_ptr:*fp16 mask_ptr:*u8 n_elements:i64 "
        "channel_stride:i64 channels:i64 slope_hi:fp32 slope_lo:fp32",
        HAS_BIAS=True, ACC=F32, BLOCK=1024),
    "leaky_relu_mask_backward_kernel": signature(
        "grad_ptr:*fp32 mask_ptr:*u8 out_ptr:*fp32 n_elements:i64 slope_hi:fp32 slope_lo:fp32",
        ACC=F32, BLOCK=1024),
}


def as_fp64(signature: dict) -> dict:
    """The same kernel on fp64 tensors (fp64 accumulation); the mask stays one byte."""
    return {name: ("*fp64" if kind in ("*fp32", "*bf16", "*fp16") else kind)
            for name, kind in signature.items()}


KERNELS = sorted(name for name in dir(k) if name.endswith("_kernel"))
assert sorted(CASES) == KERNELS, f"kernels without a signature here: {set(KERNELS) - set(CASES)}"
print(f"kernels: {len(KERNELS)}")

for name, (signature, constexprs) in CASES.items():
    for label, types, acc in (("16/32-bit", signature, F32), ("fp64", as_fp64(signature),
                                                              tl.float64)):
        source = ASTSource(fn=getattr(k, name), signature=types, constexprs={**constexprs,
                                                                             "ACC": acc})
        compiled = triton.compile(source, target=TARGET)
        cubin = compiled.asm.get("cubin", b"")
        assert len(cubin) > 0, f"{name} ({label}) produced no cubin"
        print(f"{name} {label}: sm_90 cubin {len(cubin)} bytes")
