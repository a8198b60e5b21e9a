"""Parameter-free linear layers: identity, ``Flatten``/``Unflatten``, average pooling, padding.

For a fixed linear map ``y = P x``::

    adjoint   a_x = Pᵀ a_y        tangent   t_y = P t_x        backward  g_x = Pᵀ g_y

Nothing is saved but the input's shape and memory format (the transposes run on the aten
backward kernels, which read only the input's sizes).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from fastgp.engine.base import Rule, Saved, StepContext, UnsupportedLayerError


class LinearMap(Rule):
    """A parameter-free linear layer; subclasses give the map and its transpose."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    @abstractmethod
    def transpose(self, grad: torch.Tensor, saved: Saved) -> torch.Tensor:
        """``Pᵀ grad`` for a batch of ``grad.shape[0]`` rows."""

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        return self.apply(x), {"shape": x.shape[1:], "channels_last": _is_channels_last(x)}

    def _transpose(self, grad: torch.Tensor, saved: Saved) -> torch.Tensor:
        result = self.transpose(grad, saved)
        if saved["channels_last"]:
            # Keep the step's memory format: the convolution kernels convert it otherwise.
            return result.contiguous(memory_format=torch.channels_last)
        return result

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._transpose(a_out, saved)

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.apply(t_in)

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        return self._transpose(g_out, saved) if need_input else None


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)


def _input_like(grad: torch.Tensor, saved: Saved) -> torch.Tensor:
    """A stand-in with the input's sizes (the pooling and padding backwards read only sizes and
    memory format): zero strides, or for a channels-last input an uninitialized channels-last
    tensor, so that the backward writes channels-last directly instead of writing contiguous
    and being copied (on the sum-pooled ResNet critic the copies were 16% of a step)."""
    shape = (grad.shape[0], *saved["shape"])
    if saved.get("channels_last"):
        return torch.empty(shape, dtype=grad.dtype, device=grad.device,
                           memory_format=torch.channels_last)
    return grad.new_empty(()).expand(shape)


class IdentityRule(LinearMap):
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def transpose(self, grad: torch.Tensor, saved: Saved) -> torch.Tensor:
        return grad


class ReshapeRule(LinearMap):
    """``nn.Flatten`` and ``nn.Unflatten``: the transpose restores the input's shape."""

    def transpose(self, grad: torch.Tensor, saved: Saved) -> torch.Tensor:
        return grad.reshape(grad.shape[0], *saved["shape"])


class AvgPoolRule(LinearMap):
    """``nn.AvgPool1d/2d/3d`` (1-d runs as 2-d with a unit height)."""

    def __init__(self, module: nn.Module, dims: int) -> None:
        super().__init__(module)
        self.dims = dims

        def per_dim(value, fill=None):
            values = (value,) * dims if isinstance(value, int) else tuple(value)
            return values if dims > 1 else (fill, *values)

        stride = module.stride if module.stride is not None else module.kernel_size
        self.kernel = list(per_dim(module.kernel_size, 1))
        self.stride = list(per_dim(stride, 1))
        self.padding = list(per_dim(module.padding, 0))
        self.divisor = getattr(module, "divisor_override", None)

    def transpose(self, grad: torch.Tensor, saved: Saved) -> torch.Tensor:
        m = self.module
        if self.dims == 1:
            like = _input_like(grad, saved).unsqueeze(-2)
            return torch.ops.aten.avg_pool2d_backward(
                grad.unsqueeze(-2), like, self.kernel, self.stride, self.padding, m.ceil_mode,
                m.count_include_pad, None).squeeze(-2)
        backward = (torch.ops.aten.avg_pool2d_backward if self.dims == 2
                    else torch.ops.aten.avg_pool3d_backward)
        return backward(grad, _input_like(grad, saved), self.kernel, self.stride, self.padding,
                        m.ceil_mode, m.count_include_pad, self.divisor)


class AdaptiveAvgPoolRule(LinearMap):
    """``nn.AdaptiveAvgPool1d/2d/3d`` (1-d runs as 2-d with a unit height)."""

    def __init__(self, module: nn.Module, dims: int) -> None:
        super().__init__(module)
        self.dims = dims

    def transpose(self, grad: torch.Tensor, saved: Saved) -> torch.Tensor:
        like = _input_like(grad, saved)
        if self.dims == 1:
            return torch.ops.aten._adaptive_avg_pool2d_backward(
                grad.unsqueeze(-2), like.unsqueeze(-2)).squeeze(-2)
        if self.dims == 2:
            return torch.ops.aten._adaptive_avg_pool2d_backward(grad, like)
        return torch.ops.aten._adaptive_avg_pool3d_backward(grad, like)



_PAD_BACKWARD = {
    ("reflect", 3): torch.ops.aten.reflection_pad1d_backward,
    ("reflect", 4): torch.ops.aten.reflection_pad2d_backward,
    ("reflect", 5): torch.ops.aten.reflection_pad3d_backward,
    ("replicate", 3): torch.ops.aten.replication_pad1d_backward,
    ("replicate", 4): torch.ops.aten.replication_pad2d_backward,
    ("replicate", 5): torch.ops.aten.replication_pad3d_backward,
}


def _unwrap(grad: torch.Tensor, dim: int, left: int, right: int) -> torch.Tensor:
    """The transpose of one dim's circular pad ``y = [x[n−l:], x, x[:r]]`` (``n`` entries):
    ``x̄ = ȳ[l:l+n]``, plus ``ȳ[:l]`` onto the last ``l`` entries and ``ȳ[l+n:]`` onto the first
    ``r`` (torch refuses pads that wrap more than once: ``l, r ≤ n``)."""
    size = grad.shape[dim] - left - right
    result = grad.narrow(dim, left, size).clone()  # keeps a channels-last gradient's format
    result.narrow(dim, size - left, left).add_(grad.narrow(dim, 0, left))
    result.narrow(dim, 0, right).add_(grad.narrow(dim, left + size, right))
    return result


def _circular_transpose(grad: torch.Tensor, pad: list[int]) -> torch.Tensor:
    """``Pᵀ grad`` of ``F.pad(x, pad, mode="circular")``.

    torch crops by the negative pads first, then wraps the cropped tensor by the positive ones,
    one dim at a time (``pad`` pairs run from the last dim backwards): the map is a product
    over dims, so its transpose unwraps each dim, then puts the cropped entries back as zeros.
    """
    for pair in range(len(pad) // 2):
        left, right = max(pad[2 * pair], 0), max(pad[2 * pair + 1], 0)
        if left or right:
            grad = _unwrap(grad, grad.dim() - 1 - pair, left, right)
    crops = [max(-p, 0) for p in pad]
    return F.pad(grad, crops) if any(crops) else grad


class PadRule(Rule):
    """``F.pad`` with zeros (the transpose crops), ``reflect`` or ``replicate`` (the transpose
    adds the copied border back onto the positions it came from: aten's pad backward) or
    ``circular`` (the same, written out in :func:`_circular_transpose`); ``pad`` as ``F.pad``
    takes it. A constant other than zero is a shift: the same slopes."""

    def __init__(self, pad: list[int], mode: str, value: float = 0.0) -> None:
        self.pad, self.mode, self.value = list(pad), mode, value

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        if self.mode in ("reflect", "replicate") and (self.mode, x.dim()) not in _PAD_BACKWARD:
            raise UnsupportedLayerError(
                f"{self.mode} padding of a {x.dim()}-D tensor: the engine pads 3-D to 5-D "
                "tensors with reflect or replicate (zeros and circular: what F.pad takes)")
        kwargs = {"value": self.value} if self.mode == "constant" else {}
        return self._pad(F.pad(x, self.pad, mode=self.mode, **kwargs), x), {"shape": x.shape[1:]}

    def _pad(self, padded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``padded`` in ``x``'s memory format: torch writes a circular pad of a channels-last
        tensor contiguous, and every convolution after it would convert it back."""
        if self.mode == "circular" and _is_channels_last(x):
            return padded.contiguous(memory_format=torch.channels_last)
        return padded

    def _transpose(self, grad: torch.Tensor, saved: Saved) -> torch.Tensor:
        if self.mode == "constant":
            return F.pad(grad, [-p for p in self.pad])  # negative padding crops
        if self.mode == "circular":
            return _circular_transpose(grad, self.pad)
        backward = _PAD_BACKWARD[(self.mode, grad.dim())]
        return backward(grad, _input_like(grad, saved), self.pad)

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._transpose(a_out, saved)

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        # The constant has no slope: zeros.
        return self._pad(F.pad(t_in, self.pad, mode=self.mode), t_in)

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        return self._transpose(g_out, saved) if need_input else None


class Then(Rule):
    """Two rules one after the other (a padding before the convolution that reads it)."""

    def __init__(self, first: Rule, second: Rule) -> None:
        self.first, self.second = first, second
        self.curvature = first.curvature or second.curvature

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        middle, first = self.first.forward(x, ctx)
        out, second = self.second.forward(middle, ctx)
        return out, {"first": first, "second": second}

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.first.adjoint(saved["first"], self.second.adjoint(saved["second"], a_out, ctx),
                                  ctx)

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.second.tangent(saved["second"], self.first.tangent(saved["first"], t_in, ctx),
                                   ctx)

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        middle = self.second.backward(saved["second"], g_out, ctx, True)
        return self.first.backward(saved["first"], middle, ctx, need_input)
