"""``LayerNorm`` and ``GroupNorm``: per-group normalization with an elementwise affine map.

Within one normalized group of ``n`` elements, ``x̂ = (x − μ)·r`` with ``r = 1/sqrt(var + ε)``
and ``y = γ ⊙ x̂ + β``. The normalization's Jacobian is symmetric::

    N(v) = r · (v − mean(v) − x̂ · mean(v ⊙ x̂))        (J = diag(γ)·N,  Jᵀ = N·diag(γ))

    adjoint   a_x = N(γ ⊙ a_y)
    tangent   t_n = N(t_x),  t_y = γ ⊙ t_n,  ∂γ += Σ t_n ⊙ a_y
              h̄_x = −(r/n) · [ (t_x·a_x) x̂ + (g·x̂) t_n + (t_x·x̂) a_x ],  g = γ ⊙ a_y
    backward  ∂γ += Σ g_y ⊙ x̂,  ∂β += Σ g_y,  g_x = N(γ ⊙ g_y) + h̄_x

(``·`` is the dot product within a group.) ``h̄`` is the derivative of ``⟨t_x, N(x) g⟩`` with
respect to ``x``: the normalization's curvature (docs/engine.md derives it).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from fastgp.engine.base import Rule, Saved, StepContext


class NormRule(Rule):
    """Shared passes; subclasses define the groups, the forward and the affine broadcast."""

    curvature = True

    def __init__(self, module: nn.Module, weight_index: int | None, bias_index: int | None):
        self.module = module
        self.weight_index, self.bias_index = weight_index, bias_index

    @abstractmethod
    def grouped(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` viewed as ``(..., n)``: one normalized group per row of the last dimension."""

    @abstractmethod
    def affine_view(self, like: torch.Tensor) -> tuple[torch.Tensor | None, list[int]]:
        """γ shaped to broadcast over ``like``, and the dims to sum ∂γ, ∂β over."""

    @abstractmethod
    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y, μ, r)`` of the forward; ``μ`` and ``r`` shaped like ``grouped(x)[..., :1]``."""

    def _project(self, v: torch.Tensor, xn: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
        """``N(v)`` in the grouped view."""
        return rstd * (v - v.mean(-1, keepdim=True) - xn * (v * xn).mean(-1, keepdim=True))

    def _scale(self, v: torch.Tensor) -> torch.Tensor:
        gamma, _ = self.affine_view(v)
        return v if gamma is None else v * gamma

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        y, mean, rstd = self.normalize(x)
        xn = (self.grouped(x) - mean) * rstd
        return y, {"xn": xn, "rstd": rstd}

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        saved["a_out"] = a_out
        g = self.grouped(self._scale(a_out))
        xn, rstd = ctx.penalty_part(saved["xn"]), ctx.penalty_part(saved["rstd"])
        return self._project(g, xn, rstd).view_as(a_out)

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        xn, rstd = ctx.penalty_part(saved["xn"]), ctx.penalty_part(saved["rstd"])
        a_out = saved.pop("a_out")
        u = self.grouped(t_in)
        g = self.grouped(self._scale(a_out))
        t_n = self._project(u, xn, rstd)
        a_x = self._project(g, xn, rstd)
        n = u.shape[-1]
        dot = lambda p, q: (p * q).sum(-1, keepdim=True)  # noqa: E731
        saved["curvature"] = (-(rstd / n) * (dot(u, a_x) * xn + dot(g, xn) * t_n
                                             + dot(u, xn) * a_x)).view_as(t_in)
        t_n = t_n.view_as(t_in)
        if self.weight_index is not None:
            _, dims = self.affine_view(t_n)
            ctx.add_grad(self.weight_index, (t_n * a_out).sum(dim=dims))
        return self._scale(t_n)

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        xn, rstd = ctx.backward_part(saved["xn"]), ctx.backward_part(saved["rstd"])
        _, dims = self.affine_view(g_out)
        if self.weight_index is not None:
            ctx.add_grad(self.weight_index, (g_out * xn.view_as(g_out)).sum(dim=dims))
        if self.bias_index is not None:
            ctx.add_grad(self.bias_index, g_out.sum(dim=dims))
        if not need_input:
            return None
        g_x = self._project(self.grouped(self._scale(g_out)), xn, rstd).view_as(g_out)
        return ctx.inject(g_x, saved.pop("curvature", None))


class LayerNormRule(NormRule):
    """``nn.LayerNorm``: one group per sample position over the trailing ``normalized_shape``."""

    def grouped(self, v: torch.Tensor) -> torch.Tensor:
        size = 1
        for s in self.module.normalized_shape:
            size *= s
        return v.reshape(*v.shape[:v.dim() - len(self.module.normalized_shape)], size)

    def affine_view(self, like: torch.Tensor):
        dims = list(range(like.dim() - len(self.module.normalized_shape)))
        return self.module.weight, dims

    def normalize(self, x: torch.Tensor):
        m = self.module
        y, mean, rstd = torch.native_layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)
        stats_shape = (*self.grouped(x).shape[:-1], 1)
        return y, mean.reshape(stats_shape), rstd.reshape(stats_shape)


class GroupNormRule(NormRule):
    """``nn.GroupNorm``: ``num_groups`` groups of channels (with all their positions) per sample."""

    def grouped(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(v.shape[0], self.module.num_groups, -1)

    def affine_view(self, like: torch.Tensor):
        gamma = self.module.weight
        if gamma is not None:
            gamma = gamma.view(-1, *([1] * (like.dim() - 2)))
        return gamma, [0, *range(2, like.dim())]

    def normalize(self, x: torch.Tensor):
        m = self.module
        batch, channels = x.shape[:2]
        y, mean, rstd = torch.native_group_norm(x, m.weight, m.bias, batch, channels,
                                                x[0, 0].numel(), m.num_groups, m.eps)
        return y, mean.unsqueeze(-1), rstd.unsqueeze(-1)


class InstanceNormRule(GroupNormRule):
    """``nn.InstanceNorm1d/2d/3d`` with instance statistics: each channel of each sample is one
    group (GroupNorm with one group per channel), affine or not."""

    def grouped(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(v.shape[0], v.shape[1], -1)

    def normalize(self, x: torch.Tensor):
        m = self.module
        batch, channels = x.shape[:2]
        y, mean, rstd = torch.native_group_norm(x, m.weight, m.bias, batch, channels,
                                                x[0, 0].numel(), channels, m.eps)
        return y, mean.unsqueeze(-1), rstd.unsqueeze(-1)


class BatchNormEvalRule(Rule):
    """``nn.BatchNorm1d/2d/3d`` in eval mode with running statistics: the per-channel affine map
    ``y = γ ⊙ x̂ + β``, ``x̂ = (x − μ_run)/σ_run``, ``s = γ/σ_run``::

        adjoint   a_x = s ⊙ a_y
        tangent   t_y = s ⊙ t_x,   ∂γ += Σ a_y ⊙ t_x / σ_run    (the input gradient scales with γ)
        backward  g_x = s ⊙ g_y,   ∂γ += Σ g_y ⊙ x̂,  ∂β += Σ g_y

    Linear in ``x``, so no curvature. (In training mode BatchNorm mixes the samples of a batch
    and a per-sample penalty is not defined: the reader refuses it.)
    """

    def __init__(self, module: nn.Module, weight_index: int | None, bias_index: int | None):
        self.module = module
        self.weight_index, self.bias_index = weight_index, bias_index

    def _per_channel(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.view(1, -1, *([1] * (like.dim() - 2)))

    def _scales(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1/σ_run, s)`` shaped to broadcast over ``like``."""
        m = self.module
        inverse = self._per_channel(torch.rsqrt(m.running_var + m.eps), like)
        scale = inverse if m.weight is None else inverse * self._per_channel(m.weight, like)
        return inverse, scale

    def _dims(self, like: torch.Tensor) -> list[int]:
        return [d for d in range(like.dim()) if d != 1]

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        m = self.module
        y = torch.nn.functional.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias,
                                           training=False, eps=m.eps)
        return y, {"x": x}

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        saved["a_out"] = a_out
        return self._scales(a_out)[1] * a_out

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        inverse, scale = self._scales(t_in)
        a_out = saved.pop("a_out")
        if self.weight_index is not None:
            ctx.add_grad(self.weight_index, (a_out * t_in * inverse).sum(dim=self._dims(t_in)))
        return scale * t_in

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        m = self.module
        dims = self._dims(g_out)
        inverse, scale = self._scales(g_out)
        if self.weight_index is not None:
            x = ctx.backward_part(saved["x"])
            normalized = (x - self._per_channel(m.running_mean, x)) * inverse
            ctx.add_grad(self.weight_index, (g_out * normalized).sum(dim=dims))
        if self.bias_index is not None:
            ctx.add_grad(self.bias_index, g_out.sum(dim=dims))
        return scale * g_out if need_input else None
