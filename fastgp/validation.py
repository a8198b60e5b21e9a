"""Argument checks shared by every public entry point: one rule per kind of argument.

``gradient_penalty``, ``r1_penalty``, ``dragan_penalty``, ``FusedCritic`` and the ops call these
functions, so that the same nonsense is refused with the same message whichever path a user
takes (a negative λ, a NaN centre, ``one_sided="no"``, ε outside [0, 1], NaN samples...). Each
check raises ``TypeError`` for an argument of the wrong kind and ``ValueError`` for a value out
of range, naming the argument, what was expected and what came. This module imports only torch,
so any layer of the package can use it.
"""

from __future__ import annotations

import math
import numbers

import torch


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


def check_eps(eps: object, batch: int, device: torch.device, *, check_values: bool = False) -> None:
    """Per-sample interpolation weights: a floating vector ``(B,)`` on the batch's device; with
    ``check_values`` also finite and in [0, 1] (one device sync)."""
    if not isinstance(eps, torch.Tensor):
        raise TypeError(f"eps must be a torch.Tensor of shape ({batch},), got {type(eps).__name__}")
    if eps.shape != (batch,):
        raise ValueError(f"eps must have shape (B,) = ({batch},), one weight per sample, "
                         f"got {tuple(eps.shape)}")
    if not eps.is_floating_point():
        raise TypeError(f"eps must be a floating-point tensor, got {eps.dtype}")
    if eps.device != device:
        raise ValueError(f"eps must be on the samples' device {device}, got {eps.device}")
    # NaN fails both comparisons, so this refuses NaN as well as values outside [0, 1].
    if check_values and not bool(((eps >= 0) & (eps <= 1)).all()):
        raise ValueError("eps must lie in [0, 1] (it weights real against fake samples), got "
                         f"values from {eps.min().item():.4g} to {eps.max().item():.4g}"
                         + (" including NaN" if bool(eps.isnan().any()) else ""))


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise if ``tensor`` holds NaN or Inf (one device sync)."""
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf value(s): expected finite samples")


def check_one_score_per_sample(scores: torch.Tensor, batch: int) -> None:
    """Scores ``(B,)``, ``(B, 1)`` or ``(B, 1, ..., 1)`` (a DCGAN critic ending in a 4×4
    convolution returns ``(B, 1, 1, 1)``)."""
    if scores.dim() == 0 or scores.shape[0] != batch or scores.numel() != batch:
        raise ValueError(f"the critic must return one value per sample, shape ({batch},), "
                         f"({batch}, 1) or ({batch}, 1, ..., 1), got {tuple(scores.shape)}")


def real_number(name: str, value: object, *, minimum: float | None = None,
                positive: bool = False) -> float:
    """A finite real number as a Python float: ints, floats, numpy scalars and 0-d tensors that
    do not require grad. ``minimum`` is inclusive; ``positive`` excludes 0.

    A tensor that requires grad is refused rather than cast: its gradient would be lost without
    a word. Booleans are refused: ``weight=True`` is a slip, not a λ of 1.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dim() > 1:
            raise TypeError(f"{name} must be a number, got a tensor of shape {tuple(value.shape)}")
        if value.requires_grad:
            raise TypeError(f"{name} must be a constant, got a tensor that requires grad (its "
                            "gradient would be dropped); pass a number or a detached tensor")
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a real number, got a {value.dtype} tensor")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    if positive and number <= 0:
        raise ValueError(f"{name} must be > 0, got {number}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {number}")
    return number


def flag(name: str, value: object) -> bool:
    """A boolean option: only ``True`` or ``False`` (``"no"`` is truthy in Python, so refuse it)."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.numel() == 1:
        return bool(value)
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not isinstance(value, bool) and not numpy_bool:
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def integer(name: str, value: object, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """An integer ≥ ``minimum`` (numpy integers too; not a bool, nor a float such as 2.0)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} "
                        f"{value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def penalty_scalars(weight: object, center: object, one_sided: object = False,
                    *, weight_name: str = "weight") -> tuple[float, float, bool]:
    """λ ≥ 0, centre c ≥ 0 (a norm is never negative) and the one-sided flag, all checked."""
    return (real_number(weight_name, weight, minimum=0.0),
            real_number("center", center, minimum=0.0),
            flag("one_sided", one_sided))


def check_grad_enabled(entry_point: str) -> None:
    """Autograd must be on: a penalty taken by autograd cannot be computed under ``no_grad``."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{entry_point} was called under torch.inference_mode(): the input "
                           "gradient of the critic needs autograd; call it outside that block")
    if not torch.is_grad_enabled():
        raise RuntimeError(f"{entry_point} was called with gradients disabled (torch.no_grad() "
                           "or torch.set_grad_enabled(False)): the input gradient of the critic "
                           "needs autograd; call it outside that block")
