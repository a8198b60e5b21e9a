"""Shape helpers shared by the op wrappers and the penalty API, and the one argument check every
op runs on every backend (the checks of public arguments live in :mod:`fastgp.validation`)."""

from __future__ import annotations

import torch


def batch_view_shape(like: torch.Tensor) -> tuple[int, ...]:
    """Shape ``(B, 1, ..., 1)`` that broadcasts a per-sample vector against ``like``."""
    return (like.shape[0],) + (1,) * (like.dim() - 1)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reductions over a sample run in fp32 for 16-bit inputs, else in the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_same_device(op: str, **tensors: torch.Tensor | None) -> None:
    """Refuse tensor arguments of one op call that sit on different devices (None = absent).

    Why every op runs this, real and fake alike: the Triton and native kernels dereference raw
    pointers, so a tensor on another GPU or on the host is read as garbage or faults; and a
    ``meta`` tensor among real ones sends the call to the fake kernel, which would return an
    uninitialized tensor without a word.
    """
    if len({tensor.device for tensor in tensors.values() if tensor is not None}) > 1:
        where = ", ".join(f"{name} on {tensor.device}" for name, tensor in tensors.items()
                          if tensor is not None)
        raise ValueError(f"{op}: every tensor argument must be on the same device, got {where}")
