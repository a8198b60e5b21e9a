"""Shape helpers shared by the op wrappers and the penalty API (argument checks live in
:mod:`fastgp.validation`)."""

from __future__ import annotations

import torch


def batch_view_shape(like: torch.Tensor) -> tuple[int, ...]:
    """Shape ``(B, 1, ..., 1)`` that broadcasts a per-sample vector against ``like``."""
    return (like.shape[0],) + (1,) * (like.dim() - 1)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reductions over a sample run in fp32 for 16-bit inputs, else in the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
