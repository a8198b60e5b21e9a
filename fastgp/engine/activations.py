"""Elementwise activations: piecewise linear (mask only) and smooth (with curvature).

For ``y = σ(x)`` elementwise::

    adjoint   a_x = σ'(x) ⊙ a_y
    tangent   t_y = σ'(x) ⊙ t_x,   h̄_x = σ''(x) ⊙ t_x ⊙ a_y      (the curvature term)
    backward  g_x = σ'(x) ⊙ g_y + h̄_x                            (h̄ on the penalty rows)

(Leaky)ReLU has ``σ' ∈ {α, 1}`` and ``σ'' = 0`` almost everywhere: it saves a 1-byte mask and
has no curvature term. Smooth activations save their input and recompute σ', σ'' from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fastgp.engine.base import Rule, Saved, StepContext

Derivatives = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class LeakyRule(Rule):
    """A (Leaky)ReLU that does not follow a weight layer (ReLU is slope 0)."""

    def __init__(self, negative_slope: float) -> None:
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        out, mask = ctx.leaky(x, None, self.negative_slope, 1)
        return out, {"mask": mask}

    def _product(self, saved: Saved, grad: torch.Tensor, part, ctx: StepContext):
        return ctx.mask_product(grad, part(saved["mask"]), self.negative_slope)

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._product(saved, a_out, ctx.penalty_part, ctx)

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._product(saved, t_in, ctx.penalty_part, ctx)

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        return self._product(saved, g_out, ctx.backward_part, ctx) if need_input else None


class SmoothRule(Rule):
    """A smooth activation given by its module (forward) and its first two derivatives."""

    curvature = True

    def __init__(self, module: nn.Module, derivatives: Derivatives) -> None:
        self.module, self.derivatives = module, derivatives

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        # An in-place module (SiLU(inplace=True), ELU(inplace=True)) would overwrite the input
        # that the later passes differentiate at: run it on a copy.
        inplace = getattr(self.module, "inplace", False)
        return self.module(x.clone() if inplace else x), {"x": x}

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        saved["a_out"] = a_out
        first, _ = self.derivatives(ctx.penalty_part(saved["x"]))
        return first * a_out

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        first, second = self.derivatives(ctx.penalty_part(saved["x"]))
        saved["curvature"] = second * t_in * saved.pop("a_out")
        return first * t_in

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        if not need_input:
            return None
        first, _ = self.derivatives(ctx.backward_part(saved["x"]))
        return ctx.inject(first * g_out, saved.pop("curvature", None))


def _tanh(x: torch.Tensor):
    y = torch.tanh(x)
    first = 1 - y * y
    return first, -2 * y * first


def _sigmoid(x: torch.Tensor):
    s = torch.sigmoid(x)
    first = s * (1 - s)
    return first, first * (1 - 2 * s)


def _silu(x: torch.Tensor):
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s)), s * (1 - s) * (2 + x * (1 - 2 * s))


def _softplus(beta: float, threshold: float) -> Derivatives:
    def derivatives(x: torch.Tensor):
        # Above the threshold softplus is the identity (torch's own convention).
        linear = x * beta > threshold
        s = torch.sigmoid(x * beta)
        first = torch.where(linear, torch.ones_like(x), s)
        second = torch.where(linear, torch.zeros_like(x), beta * s * (1 - s))
        return first, second
    return derivatives


def _elu(alpha: float) -> Derivatives:
    def derivatives(x: torch.Tensor):
        negative = alpha * torch.exp(torch.clamp_max(x, 0))
        positive = x > 0
        return (torch.where(positive, torch.ones_like(x), negative),
                torch.where(positive, torch.zeros_like(x), negative))
    return derivatives


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _gelu(x: torch.Tensor):
    cdf = 0.5 * (1 + torch.erf(x * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * torch.exp(-0.5 * x * x)
    return cdf + x * pdf, pdf * (2 - x * x)


def _gelu_tanh(x: torch.Tensor):
    k = 0.044715
    u = _SQRT_2_OVER_PI * (x + k * x ** 3)
    du = _SQRT_2_OVER_PI * (1 + 3 * k * x * x)
    d2u = _SQRT_2_OVER_PI * 6 * k * x
    t = torch.tanh(u)
    sech2 = 1 - t * t
    first = 0.5 * (1 + t) + 0.5 * x * sech2 * du
    second = sech2 * du + 0.5 * x * (sech2 * d2u - 2 * t * sech2 * du * du)
    return first, second


def smooth_derivatives(module: nn.Module) -> Derivatives | None:
    """σ' and σ'' of a smooth activation module, or None when it is not one we know."""
    if isinstance(module, nn.Tanh):
        return _tanh
    if isinstance(module, nn.Sigmoid):
        return _sigmoid
    if isinstance(module, nn.SiLU):
        return _silu
    if isinstance(module, nn.Softplus):
        return _softplus(float(module.beta), float(module.threshold))
    if isinstance(module, nn.ELU):
        return _elu(float(module.alpha))
    if isinstance(module, nn.GELU):
        return _gelu_tanh if module.approximate == "tanh" else _gelu
    return None
