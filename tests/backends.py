"""The op backends that can run on this machine (Triton through its CPU interpreter)."""

import pytest
import torch

# implementation(backend): the registered ops of one concrete backend, as fastgp.ops.Kernels
from fastgp.ops.backend import kernels as implementation  # noqa: F401
from fastgp.ops.backend import native_unavailable_reason, triton_unavailable_reason

CPU = torch.device("cpu")


def _param(name, reason):
    return pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))


BACKENDS = [
    "torch",
    _param("triton", triton_unavailable_reason(CPU)),
    _param("native", native_unavailable_reason(CPU)),
]

AVAILABLE = [name for name, reason in [
    ("torch", None),
    ("triton", triton_unavailable_reason(CPU)),
    ("native", native_unavailable_reason(CPU)),
] if reason is None]
