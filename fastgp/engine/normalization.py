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


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)


def _in_layout(v: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``v`` in channels-last memory when asked (a no-op when it is already)."""
    return v.contiguous(memory_format=torch.channels_last) if channels_last else v


def _mean(v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return v.mean(dim=dims, keepdim=True)


class NormRule(Rule):
    """Shared passes; subclasses define the groups, the forward and the affine broadcast.

    The linear parts — ``a_x = N(γ ⊙ a_y)`` of the adjoint and, in the backward, ``g_x``,
    ``∂γ`` and ``∂β`` — are PyTorch's own fused normalization backward kernels (one kernel each,
    as autograd's first backward uses). The tangent pass works on a *grouped* view of its
    tensors in which each normalized group is reduced over ``dims`` — for channels-last
    activations a view of the memory as it lies (``(B, HW, G, C/G)``, reduced over dims 1 and
    3), so no pass copies a tensor into another layout; the group means are the dot products of
    the formulas above over ``n``. The forward keeps the input and the statistics, not ``x̂``.
    """

    curvature = True

    def __init__(self, module: nn.Module, weight_index: int | None, bias_index: int | None):
        self.module = module
        self.weight_index, self.bias_index = weight_index, bias_index

    @abstractmethod
    def grouped(self, v: torch.Tensor, channels_last: bool) -> tuple[torch.Tensor, tuple]:
        """``v`` viewed with one normalized group per index outside the returned ``dims``;
        ``channels_last``: the layout of the forward's input, which every pass follows."""

    def ungroup(self, r: torch.Tensor, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """A grouped result back in the shape of ``like`` (its layout: a view, no copy)."""
        return r.view(like.shape)

    @abstractmethod
    def affine_view(self, like: torch.Tensor) -> tuple[torch.Tensor | None, list[int]]:
        """γ shaped to broadcast over ``like``, and the dims to sum ∂γ, ∂β over."""

    @abstractmethod
    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y, μ, r)`` of PyTorch's forward kernel (``μ``, ``r`` as that kernel returns them)."""

    @abstractmethod
    def statistics(self, stat: torch.Tensor, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """``μ`` or ``r`` of :meth:`normalize` shaped to broadcast over ``grouped(x)``."""

    @abstractmethod
    def native_backward(self, grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor,
                        rstd: torch.Tensor, mask: list[bool]) -> tuple:
        """PyTorch's backward kernel: ``(N(γ ⊙ grad), Σ grad ⊙ x̂, Σ grad)`` as ``mask`` asks."""

    def _scale(self, v: torch.Tensor) -> torch.Tensor:
        gamma, _ = self.affine_view(v)
        return v if gamma is None else v * gamma

    def contiguous_kernels(self, x: torch.Tensor) -> bool:
        """Run the passes on a contiguous copy of a channels-last input (kernels that are
        slow in channels-last)."""
        return False

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        out_channels_last = _channels_last(x)
        if out_channels_last and self.contiguous_kernels(x):
            x = x.contiguous()
        y, mean, rstd = self.normalize(x)
        return _in_layout(y, out_channels_last), {
            "x": x, "mean": mean, "rstd": rstd, "channels_last": _channels_last(x),
            "out_channels_last": out_channels_last}

    @staticmethod
    def _parts(saved: Saved, part) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return part(saved["x"]), part(saved["mean"]), part(saved["rstd"])

    def _native(self, grad, x, mean, rstd, mask):
        grad = grad.contiguous(memory_format=torch.channels_last if _channels_last(x)
                               else torch.contiguous_format)  # the kernel's layout: x's
        return self.native_backward(grad, x, mean, rstd, mask)

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x, mean, rstd = self._parts(saved, ctx.penalty_part)
        a_x = self._native(a_out, x, mean, rstd, [True, False, False])[0]
        saved.update(a_out=a_out, a_x=a_x)
        return _in_layout(a_x, saved["out_channels_last"])

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x, mean, rstd = self._parts(saved, ctx.penalty_part)
        channels_last = saved["channels_last"]
        a_out, a_x = saved.pop("a_out"), saved.pop("a_x")
        grouped_x, dims = self.grouped(x, channels_last)
        rstd = self.statistics(rstd, x, channels_last)
        xn = (grouped_x - self.statistics(mean, x, channels_last)).mul_(rstd)
        g, _ = self.grouped(self._scale(a_out), channels_last)
        a_x, _ = self.grouped(a_x, channels_last)
        u, _ = self.grouped(t_in, channels_last)
        u_xn = _mean(u * xn, dims)
        # t_n = N(u) = r·(u − mean(u) − x̂·mean(u ⊙ x̂))
        t_n = torch.addcmul(u - _mean(u, dims), xn, u_xn, value=-1.0).mul_(rstd)
        # h̄ = −r·[mean(u⊙a_x)·x̂ + mean(g⊙x̂)·t_n + mean(u⊙x̂)·a_x]  (the dots over n)
        curvature = torch.addcmul(xn * _mean(u * a_x, dims), t_n, _mean(g * xn, dims))
        curvature.addcmul_(a_x, u_xn).mul_(-rstd)
        saved["curvature"] = self.ungroup(curvature, x, channels_last)
        t_n = self.ungroup(t_n, x, channels_last)
        if self.weight_index is not None:
            _, sum_dims = self.affine_view(t_n)
            ctx.add_grad(self.weight_index, (t_n * a_out).sum(dim=sum_dims))
        return _in_layout(self._scale(t_n), saved["out_channels_last"])

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        x, mean, rstd = self._parts(saved, ctx.backward_part)
        weight, bias = self.weight_index is not None, self.bias_index is not None
        g_x, g_weight, g_bias = self._native(g_out, x, mean, rstd, [need_input, weight, bias])
        if weight:
            ctx.add_grad(self.weight_index, g_weight)
        if bias:
            ctx.add_grad(self.bias_index, g_bias)
        if not need_input:
            return None
        return _in_layout(ctx.inject(g_x, saved.pop("curvature", None)),
                          saved["out_channels_last"])


class LayerNormRule(NormRule):
    """``nn.LayerNorm``: one group per sample position over the trailing ``normalized_shape``."""

    def _whole_sample(self, v: torch.Tensor, channels_last: bool) -> bool:
        """Normalized over all of a channels-last sample: one group is the sample's memory."""
        return channels_last and len(self.module.normalized_shape) == v.dim() - 1

    def grouped(self, v: torch.Tensor, channels_last: bool):
        if self._whole_sample(v, channels_last):
            v = v.contiguous(memory_format=torch.channels_last)  # a view when it already is
            return v.permute(0, 2, 3, 1).reshape(v.shape[0], -1), (-1,)
        size = 1
        for s in self.module.normalized_shape:
            size *= s
        return v.reshape(*v.shape[:v.dim() - len(self.module.normalized_shape)], size), (-1,)

    def ungroup(self, r, like, channels_last):
        if self._whole_sample(like, channels_last):
            batch, channels, height, width = like.shape
            return r.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return r.reshape(like.shape)

    def affine_view(self, like: torch.Tensor):
        dims = list(range(like.dim() - len(self.module.normalized_shape)))
        return self.module.weight, dims

    def normalize(self, x: torch.Tensor):
        m = self.module
        return torch.native_layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)

    def statistics(self, stat, x, channels_last):
        return stat.reshape(*x.shape[:x.dim() - len(self.module.normalized_shape)], 1)

    def native_backward(self, grad, x, mean, rstd, mask):
        m = self.module
        return torch.ops.aten.native_layer_norm_backward(grad, x, m.normalized_shape, mean, rstd,
                                                         m.weight, m.bias, mask)


class GroupNormRule(NormRule):
    """``nn.GroupNorm``: ``num_groups`` groups of channels (with all their positions) per sample.

    Contiguous tensors are grouped as ``(B, G, C/G·HW)``; channels-last images as the
    ``(B, HW, G, C/G)`` view of their memory."""

    def groups(self, channels: int) -> int:
        return self.module.num_groups

    def grouped(self, v: torch.Tensor, channels_last: bool):
        groups = self.groups(v.shape[1])
        if channels_last:
            batch, channels = v.shape[:2]
            v = v.contiguous(memory_format=torch.channels_last)  # a view when it already is
            return v.permute(0, 2, 3, 1).reshape(batch, -1, groups, channels // groups), (1, 3)
        return v.reshape(v.shape[0], groups, -1), (2,)

    def ungroup(self, r, like, channels_last):
        if channels_last:
            batch, channels, height, width = like.shape
            return r.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return r.reshape(like.shape)

    def affine_view(self, like: torch.Tensor):
        gamma = self.module.weight
        if gamma is not None:
            gamma = gamma.view(-1, *([1] * (like.dim() - 2)))
        return gamma, [0, *range(2, like.dim())]

    def normalize(self, x: torch.Tensor):
        m = self.module
        batch, channels = x.shape[:2]
        return torch.native_group_norm(x, m.weight, m.bias, batch, channels, x[0, 0].numel(),
                                       self.groups(channels), m.eps)

    def statistics(self, stat, x, channels_last):
        batch, groups = stat.shape
        return stat.view(batch, 1, groups, 1) if channels_last else stat.view(batch, groups, 1)

    def contiguous_kernels(self, x: torch.Tensor) -> bool:
        # PyTorch's CPU GroupNorm kernels ran 5x slower on channels-last input (64×128×8×8,
        # one group per channel: 0.76 vs 0.14 ms); the copies cost less than that.
        return x.device.type == "cpu"

    def native_backward(self, grad, x, mean, rstd, mask):
        batch, channels = x.shape[:2]
        return torch.ops.aten.native_group_norm_backward(
            grad, x, mean, rstd, self.module.weight, batch, channels, x[0, 0].numel(),
            self.groups(channels), mask)


class InstanceNormRule(GroupNormRule):
    """``nn.InstanceNorm1d/2d/3d`` with instance statistics: each channel of each sample is one
    group (GroupNorm with one group per channel), affine or not."""

    def groups(self, channels: int) -> int:
        return channels


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
