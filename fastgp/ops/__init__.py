"""fastgp ops: ``torch.library`` custom ops with fake kernels and autograd formulas.

Each op has a PyTorch composite implementation, which is the oracle and the fallback on every
device. The functions here are the checked, documented entry points; the raw ops are
``torch.ops.fastgp.interpolate`` and ``torch.ops.fastgp.norm_penalty``.
"""

from __future__ import annotations

import torch

# Importing the op modules registers fastgp::interpolate and fastgp::norm_penalty.
from fastgp.ops import interpolate_op as interpolate_op
from fastgp.ops import norm_penalty_op as norm_penalty_op
from fastgp.ops._checks import check_batched_float, check_eps, check_same_layout


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per-sample mix ``x̂_i = ε_i · real_i + (1 − ε_i) · fake_i``.

    Args:
        real, fake: sample batches of the same shape ``(B, ...)``, dtype and device.
        eps: interpolation weights of shape ``(B,)``; cast to the samples' dtype.

    Returns:
        ``x̂`` with the shape, dtype and memory format of ``real``. Differentiable with respect
        to all three inputs, twice.
    """
    check_batched_float("real", real)
    check_batched_float("fake", fake)
    check_same_layout("real", real, "fake", fake)
    check_eps(eps, real.shape[0], real.device)
    return torch.ops.fastgp.interpolate(real, fake, eps)


def norm_penalty(
    grad: torch.Tensor, weight: float = 10.0, center: float = 1.0, one_sided: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penalty ``λ · mean_i(d_i²)`` on the per-sample norms ``n_i = ‖grad_i‖₂``.

    ``d_i = n_i − center``, or ``max(0, n_i − center)`` when ``one_sided``. The subgradient at a
    zero norm is 0, never NaN.

    Returns:
        ``(penalty, norms)``: a scalar and a ``(B,)`` vector, in fp32 for 16-bit ``grad`` and in
        ``grad``'s dtype otherwise.
    """
    check_batched_float("grad", grad)
    return torch.ops.fastgp.norm_penalty(grad, float(weight), float(center), bool(one_sided))


__all__ = ["interpolate", "norm_penalty"]
