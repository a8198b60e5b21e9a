"""Weight layers: ``Linear`` and ``Conv1d/2d/3d``, optionally fused with a following (Leaky)ReLU.

For ``z = W x (+ b)`` (a matmul or a convolution), with ``out = leaky(z)`` when fused::

    forward   z = W x,  out, m = bias_leaky_relu(z, b, α)     (m: 1-byte mask, z never stored)
    adjoint   a_z = m ⊙ a_out,  a_x = Wᵀ a_z                   (α where m is False)
    tangent   t_z = W t_x,  t_out = m ⊙ t_z,  ∂W += a_z ⊗ t_x   (the penalty's weight gradient)
    backward  g_z = m ⊙ g_out,  ∂W += g_z ⊗ x,  ∂b += Σ g_z,  g_x = Wᵀ g_z

The layer is linear in ``x`` and LeakyReLU is piecewise linear, so there is no curvature term:
the bias never appears in the penalty's gradient. ``⊗`` is a matmul for ``Linear`` and the
convolution's weight gradient for ``ConvNd`` — one call per pass.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from fastgp.engine.base import Rule, Saved, StepContext, UnsupportedLayerError

_CONV_FORWARD = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class Affine(Rule):
    """Shared passes of ``Linear`` and ``ConvNd``; subclasses supply the three linear maps."""

    def __init__(self, module: nn.Module, weight_index: int, bias_index: int | None,
                 negative_slope: float | None) -> None:
        self.module = module
        self.weight_index, self.bias_index = weight_index, bias_index
        self.negative_slope = negative_slope

    channel_dim = 1

    @abstractmethod
    def apply_weight(self, saved: Saved, x: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
        """``W x``, plus ``bias`` when given."""

    @abstractmethod
    def input_adjoint(self, saved: Saved, a_z: torch.Tensor, x_like: torch.Tensor) -> torch.Tensor:
        """``Wᵀ a_z``, shaped like ``x_like``."""

    @abstractmethod
    def add_weight_grad(self, saved: Saved, a_z: torch.Tensor, x: torch.Tensor,
                        ctx: StepContext) -> None:
        """``∂W += a_z ⊗ x`` summed over the rows."""

    def prepare(self, x: torch.Tensor) -> Saved:
        """What the passes of one forward share besides its input (nothing by default)."""
        return {}

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        bias = self.module.bias
        saved = {"x": x, **self.prepare(x)}
        if self.negative_slope is None:
            return self.apply_weight(saved, x, bias), saved
        z = self.apply_weight(saved, x)
        out, saved["mask"] = ctx.leaky(z, bias, self.negative_slope, self.channel_dim % z.dim())
        return out, saved

    def _through_mask(self, saved: Saved, grad: torch.Tensor, part, ctx: StepContext):
        if self.negative_slope is None:
            return grad
        return ctx.mask_product(grad, part(saved["mask"]), self.negative_slope)

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        a_z = self._through_mask(saved, a_out, ctx.penalty_part, ctx)
        saved["a_z"] = a_z
        return self.input_adjoint(saved, a_z, ctx.penalty_part(saved["x"]))

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        self.add_weight_grad(saved, saved.pop("a_z"), t_in, ctx)
        return self._through_mask(saved, self.apply_weight(saved, t_in), ctx.penalty_part, ctx)

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        g_z = self._through_mask(saved, g_out, ctx.backward_part, ctx)
        return self.backward_from(saved, g_z, ctx.backward_part(saved["x"]), ctx, need_input)

    def backward_from(self, saved: Saved, g_z: torch.Tensor, x: torch.Tensor, ctx: StepContext,
                      need_input: bool) -> torch.Tensor | None:
        """Weight, bias and (when asked) input gradients from ``g_z`` at the layer's output."""
        self.add_weight_grad(saved, g_z, x, ctx)
        if self.bias_index is not None:
            dims = [d for d in range(g_z.dim()) if d != self.channel_dim % g_z.dim()]
            ctx.add_grad(self.bias_index, g_z.sum(dim=dims))
        return self.input_adjoint(saved, g_z, x) if need_input else None


class LinearRule(Affine):
    """``nn.Linear`` over the last dimension of inputs of any rank."""

    channel_dim = -1

    def apply_weight(self, saved: Saved, x: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, self.module.weight, bias)

    def input_adjoint(self, saved: Saved, a_z: torch.Tensor, x_like: torch.Tensor) -> torch.Tensor:
        return a_z.matmul(self.module.weight)

    def add_weight_grad(self, saved: Saved, a_z: torch.Tensor, x: torch.Tensor,
                        ctx: StepContext) -> None:
        if a_z.dim() > 2:  # rows of all leading dims (reshape is an op even when it is a view)
            a_z, x = a_z.reshape(-1, a_z.shape[-1]), x.reshape(-1, x.shape[-1])
        ctx.add_matmul_grad(self.weight_index, a_z, x)


class ConvRule(Affine):
    """``nn.Conv1d/2d/3d`` with any stride, padding, dilation and groups. A convolution with
    another ``padding_mode`` is this rule with ``padding=0`` after a :class:`PadRule`."""

    def __init__(self, module: nn.Module, weight_index: int, bias_index: int | None,
                 negative_slope: float | None, padding: tuple[int, ...] | None = None) -> None:
        super().__init__(module, weight_index, bias_index, negative_slope)
        if padding is None and module.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"{type(module).__name__} with padding_mode={module.padding_mode!r} needs its "
                "padding as a separate pass (layer_rule does that)")
        self.dims = len(module.kernel_size)
        self.padding = _numeric_padding(module) if padding is None else padding
        self.forward_fn = _CONV_FORWARD[self.dims]

    def apply_weight(self, saved: Saved, x: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
        m = self.module
        return self.forward_fn(x, m.weight, bias, m.stride, self.padding, m.dilation, m.groups)

    def _conv_backward(self, grad: torch.Tensor, x: torch.Tensor, mask: list[bool]):
        m = self.module
        bias_sizes = None if m.bias is None else list(m.bias.shape)
        return torch.ops.aten.convolution_backward(
            grad, x, m.weight, bias_sizes, list(m.stride), list(self.padding), list(m.dilation),
            False, [0] * self.dims, m.groups, mask)

    def backward_from(self, saved: Saved, g_z: torch.Tensor, x: torch.Tensor, ctx: StepContext,
                      need_input: bool) -> torch.Tensor | None:
        # One call computes the input, weight and bias gradients from one read of g_z.
        grad_x, grad_w, grad_b = self._conv_backward(
            g_z, x, [need_input, True, self.bias_index is not None])
        ctx.add_grad(self.weight_index, grad_w)
        if self.bias_index is not None:
            ctx.add_grad(self.bias_index, grad_b)
        return grad_x

    def input_adjoint(self, saved: Saved, a_z: torch.Tensor, x_like: torch.Tensor) -> torch.Tensor:
        return self._conv_backward(a_z, x_like, [True, False, False])[0]

    def add_weight_grad(self, saved: Saved, a_z: torch.Tensor, x: torch.Tensor,
                        ctx: StepContext) -> None:
        ctx.add_grad(self.weight_index, self._conv_backward(a_z, x, [False, True, False])[1])


def _numeric_padding(module: nn.Module) -> tuple[int, ...]:
    """The padding as numbers; ``"same"`` only where it is symmetric (odd total padding is not)."""
    if module.padding == "valid":
        return (0,) * len(module.kernel_size)
    if module.padding == "same":
        totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if any(total % 2 for total in totals):
            raise UnsupportedLayerError(
                f"{type(module).__name__} with padding='same' and an even receptive field pads "
                "asymmetrically; give the padding as numbers")
        return tuple(total // 2 for total in totals)
    return tuple(module.padding)


class FlattenLinearRule(Affine):
    """``nn.Flatten()`` then ``nn.Linear``: the critic head after a convolution stack.

    A channels-last activation flattened in ``(C, H, W)`` order would be copied in every pass;
    instead its free ``(H, W, C)`` view meets the weight's columns permuted the same way (one
    copy of the small weight per forward), and the weight gradient is permuted back.
    """

    channel_dim = -1

    @staticmethod
    def _channels_last(x: torch.Tensor) -> bool:
        return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)

    def prepare(self, x: torch.Tensor) -> Saved:
        weight, channels_last = self.module.weight, self._channels_last(x)
        if channels_last:
            channels, height, width = x.shape[1:]
            weight = weight.view(-1, channels, height, width).permute(0, 2, 3, 1).reshape(
                weight.shape[0], -1)
        return {"weight": weight, "channels_last": channels_last, "shape": x.shape[1:]}

    @staticmethod
    def _flat(saved: Saved, x: torch.Tensor) -> torch.Tensor:
        if saved["channels_last"]:
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return x.reshape(x.shape[0], -1)

    def apply_weight(self, saved: Saved, x: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(self._flat(saved, x), saved["weight"], bias)

    def input_adjoint(self, saved: Saved, a_z: torch.Tensor, x_like: torch.Tensor) -> torch.Tensor:
        flat = a_z.matmul(saved["weight"])
        if saved["channels_last"]:
            channels, height, width = saved["shape"]
            return flat.view(-1, height, width, channels).permute(0, 3, 1, 2)
        return flat.view(-1, *saved["shape"])

    def add_weight_grad(self, saved: Saved, a_z: torch.Tensor, x: torch.Tensor,
                        ctx: StepContext) -> None:
        if not saved["channels_last"]:
            ctx.add_matmul_grad(self.weight_index, a_z, self._flat(saved, x))
            return
        channels, height, width = saved["shape"]
        grad = a_z.t() @ self._flat(saved, x)
        ctx.add_grad(self.weight_index, grad.view(-1, height, width, channels).permute(
            0, 3, 1, 2).reshape(grad.shape[0], -1))
