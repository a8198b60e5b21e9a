"""fastgp ops: ``torch.library`` ops with fake kernels and autograd formulas.

Each op has three implementations — Triton kernels, the native extension ``fastgp._C`` and a
PyTorch composite (the oracle and the fallback) — each registered once
(``torch.ops.fastgp_triton``, ``torch.ops.fastgp_native``, ``torch.ops.fastgp_torch``) and
chosen in Python before the call, per call by ``backend=`` or globally by :func:`set_backend`
(see :mod:`fastgp.ops.backend`). The functions here are the checked, documented entry points;
the formulas are in :mod:`fastgp.ops.formulas`, the contract in ``fastgp/ops/README.md``.
"""

from __future__ import annotations

import torch

from fastgp.ops.backend import BACKENDS, get_backend, kernels, resolve, set_backend
from fastgp.ops.formulas import Kernels
from fastgp.validation import (
    check_batched_float,
    check_eps,
    check_same_layout,
    penalty_scalars,
    real_number,
)


def kernels_for(backend: str | None, device: torch.device) -> Kernels:
    """The ops of the implementation that ``backend`` (None: :func:`get_backend`) runs on
    ``device``: the choice made once, in Python, before the calls."""
    return kernels(resolve(backend, device))


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor, *,
                backend: str | None = None) -> torch.Tensor:
    """Per-sample mix ``x̂_i = ε_i · real_i + (1 − ε_i) · fake_i``.

    Args:
        real, fake: sample batches of the same shape ``(B, ...)``, dtype and device.
        eps: interpolation weights of shape ``(B,)``; cast to the samples' dtype.
        backend: ``auto``/``triton``/``native``/``torch``; None uses :func:`get_backend`.

    Returns:
        ``x̂`` with the shape and dtype of ``real``, and its strides when ``real`` is contiguous
        or channels_last (contiguous otherwise; see :mod:`fastgp.ops._layout`). Differentiable
        with respect to all three inputs, twice.
    """
    check_batched_float("real", real)
    check_batched_float("fake", fake)
    check_same_layout("real", real, "fake", fake)
    check_eps(eps, real.shape[0], real.device)
    return kernels_for(backend, real.device).interpolate(real, fake, eps)


def norm_penalty(
    grad: torch.Tensor, weight: float = 10.0, center: float = 1.0, one_sided: bool = False, *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penalty ``λ · mean_i(d_i²)`` on the per-sample norms ``n_i = ‖grad_i‖₂``.

    ``d_i = n_i − center``, or ``max(0, n_i − center)`` when ``one_sided``. The subgradient at a
    zero norm is 0, never NaN.

    Returns:
        ``(penalty, norms)``: a scalar and a ``(B,)`` vector, in fp32 for 16-bit ``grad`` and in
        ``grad``'s dtype otherwise.
    """
    check_batched_float("grad", grad)
    weight, center, one_sided = penalty_scalars(weight, center, one_sided)
    return kernels_for(backend, grad.device).norm_penalty(grad, weight, center, one_sided)


def bias_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
    channel_dim: int = 1, *, backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = x + bias`` (broadcast along ``channel_dim``), ``out = y > 0 ? y : α·y``, and the mask.

    Returns:
        ``(out, mask)``: ``out`` like ``x`` (in the layout of :mod:`fastgp.ops._layout`);
        ``mask`` a ``torch.bool`` tensor (one byte per element, same layout) that is True where
        ``y > 0``. Differentiable in ``x`` and ``bias``, twice.
    """
    check_batched_float("x", x)
    channel_dim = channel_dim % x.dim()
    if bias is not None:
        if bias.shape != (x.shape[channel_dim],):
            raise ValueError(f"bias must have shape ({x.shape[channel_dim]},), one value per "
                             f"channel of dim {channel_dim}, got {tuple(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"bias must be on {x.device}, got {bias.device}")
    negative_slope = real_number("negative_slope", negative_slope)
    return kernels_for(backend, x.device).bias_leaky_relu(x, bias, negative_slope, channel_dim)


__all__ = ["BACKENDS", "Kernels", "bias_leaky_relu", "get_backend", "interpolate", "kernels_for",
           "norm_penalty", "set_backend"]
