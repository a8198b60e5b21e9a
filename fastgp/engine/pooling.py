"""Max pooling: piecewise linear, with the argmax of each window saved in the forward.

For ``y_j = x_{i(j)}`` (``i(j)`` the position of window ``j``'s maximum, locally constant)::

    adjoint / backward   a_x = scatter-add of a_y to the positions i(j)
    tangent              t_y = t_x gathered at i(j)

No curvature; the indices (int64, one per output element) are all the later passes need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastgp.engine.base import Rule, Saved, StepContext

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


class MaxPoolRule(Rule):
    """``nn.MaxPool1d/2d/3d`` (any kernel, stride, padding, dilation, ceil mode)."""

    def __init__(self, module: nn.Module, dims: int) -> None:
        self.module, self.dims = module, dims

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        m = self.module
        out, indices = _MAX_POOL[self.dims](x, m.kernel_size, m.stride, m.padding, m.dilation,
                                            ceil_mode=m.ceil_mode, return_indices=True)
        return out, {"indices": indices, "spatial": x.shape[2:]}

    @staticmethod
    def _scatter(saved: Saved, grad: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        rows, channels = grad.shape[:2]
        size = 1
        for s in saved["spatial"]:
            size *= s
        flat = grad.new_zeros(rows, channels, size)
        flat.scatter_add_(2, indices.reshape(rows, channels, -1), grad.reshape(rows, channels, -1))
        return flat.view(rows, channels, *saved["spatial"])

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._scatter(saved, a_out, ctx.penalty_part(saved["indices"]))

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        indices = ctx.penalty_part(saved["indices"])
        rows, channels = t_in.shape[:2]
        picked = t_in.reshape(rows, channels, -1).gather(2, indices.reshape(rows, channels, -1))
        return picked.view(indices.shape)

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        if not need_input:
            return None
        return self._scatter(saved, g_out, ctx.backward_part(saved["indices"]))
