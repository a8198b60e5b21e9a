"""Shape helpers and input checks shared by the op wrappers and the penalty API."""

from __future__ import annotations

import torch


def batch_view_shape(like: torch.Tensor) -> tuple[int, ...]:
    """Shape ``(B, 1, ..., 1)`` that broadcasts a per-sample vector against ``like``."""
    return (like.shape[0],) + (1,) * (like.dim() - 1)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reductions over a sample run in fp32 for 16-bit inputs, else in the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_batched_float(name: str, tensor: object) -> None:
    """A tensor of rank ≥ 2 with at least one sample and a floating-point dtype."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2:
        raise ValueError(
            f"{name} must have a batch dimension and at least one feature dimension "
            f"(rank >= 2, e.g. (B, features)), got shape {tuple(tensor.shape)}"
        )
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: expected at least one sample, got shape "
                         f"{tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/"
                        f"float64), got {tensor.dtype}")


def check_same_layout(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Two sample batches that can be mixed element by element: same shape, dtype and device."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} and {name_b} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on the same device, got "
                         f"{a.device} and {b.device}")


def check_eps(eps: object, batch: int, device: torch.device) -> None:
    """Per-sample interpolation weights: a floating vector of shape ``(B,)`` on the batch's device."""
    if not isinstance(eps, torch.Tensor):
        raise TypeError(f"eps must be a torch.Tensor of shape ({batch},), got {type(eps).__name__}")
    if eps.shape != (batch,):
        raise ValueError(f"eps must have shape (B,) = ({batch},), one weight per sample, "
                         f"got {tuple(eps.shape)}")
    if not eps.is_floating_point():
        raise TypeError(f"eps must be a floating-point tensor, got {eps.dtype}")
    if eps.device != device:
        raise ValueError(f"eps must be on the samples' device {device}, got {eps.device}")


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise if ``tensor`` holds NaN or Inf (one device sync)."""
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf value(s): expected finite samples")
