"""Find the op that implements ``name`` for a concrete backend.

Backends ``triton``, ``native`` and ``torch`` run through the ``fastgp::`` custom ops, which take
the backend as their last argument (opaque to ``torch.compile``; the path the tests run).
``TRITON_OP`` is the compile-visible path used for Triton on CUDA: the same kernels behind
``torch.library.triton_op`` (``fastgp_triton::``), so Inductor sees the kernels themselves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TRITON_OP = "triton_op"


def op_for(name: str, backend: str) -> Callable:
    """A callable taking the op's arguments without ``backend``."""
    if backend == TRITON_OP:
        import fastgp.ops.triton.compiled_ops  # noqa: F401  (registers fastgp_triton::)

        return getattr(torch.ops.fastgp_triton, name)
    op = getattr(torch.ops.fastgp, name)
    return lambda *args: op(*args, backend)


def public_backend(resolved: str, device: torch.device) -> str:
    """The backend a public call uses: the triton_op path for Triton on CUDA."""
    return TRITON_OP if resolved == "triton" and device.type == "cuda" else resolved
