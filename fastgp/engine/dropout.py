"""Dropout in training mode: one mask per forward pass, shared by the passes after it.

The forward draws ``m ∈ {0, 1/(1−p)}`` (per element, or per sample and channel for
``Dropout1d/2d/3d``) and computes ``v = m ⊙ h``; from then on the layer is a fixed per-sample
linear map::

    adjoint   a_h = m ⊙ a_v        tangent   t_v = m ⊙ t_h        backward  g_h = m ⊙ g_v

This is what autograd's double backward differentiates for one call ``critic(x̂)``: the mask
drawn by that call is part of its graph, so the input gradient ``∇ₓC(x̂)`` and the penalty's
parameter gradients both see the same ``m``.

The mask is drawn by the dropout itself, applied to ones: the same op on a tensor of the same
dtype and device, so it takes the same numbers from the same generator as ``module(h)`` would,
and leaves the generator where the module would. Two details keep it so. The ones are
contiguous: on CPU torch fills the mask in memory order, so a channels-last activation (the
engine's format for image critics) would get another mask than the contiguous activation of
the critic's own eager call. And a channel-wise mask is drawn on ones of shape
``(N, C, 1, …)``: torch draws its noise in that shape whatever the spatial sizes, and the mask
then stays that small in memory.
"""

from __future__ import annotations

import torch
from torch import nn

from fastgp.engine.base import Rule, Saved, StepContext


class DropoutRule(Rule):
    """A dropout module in training mode (``nn.Dropout``, ``Dropout1d/2d/3d``, or the module an
    ``F.dropout*`` call equals); ``channel_dims`` is the number of spatial dims of a channel-wise
    dropout (1, 2, 3), None for an element-wise one. ``p`` is read from the module at every
    forward, as its own forward does (``p = 0`` draws nothing: a mask of ones)."""

    def __init__(self, module: nn.Module, channel_dims: int | None) -> None:
        self.module, self.channel_dims = module, channel_dims

    def mask(self, h: torch.Tensor) -> torch.Tensor:
        """``m = dropout(1)`` over contiguous ones shaped like ``h``, or ``(N, C, 1, …)`` for a
        channel-wise dropout of a batched ``h`` (other ranks keep torch's own reading of them)."""
        shape = h.shape
        if self.channel_dims is not None and h.dim() == self.channel_dims + 2:
            shape = (*shape[:2], *(1,) * self.channel_dims)
        return self.module(torch.ones(shape, dtype=h.dtype, device=h.device))

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        mask = self.mask(x)
        # x first: the product keeps x's memory format (channels-last stays channels-last).
        return x * mask, {"mask": mask}

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return a_out * ctx.penalty_part(saved["mask"])

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return t_in * ctx.penalty_part(saved["mask"])

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        return g_out * ctx.backward_part(saved["mask"]) if need_input else None
