"""``F.linear`` and ``F.conv1d/2d/3d`` called in ``forward`` with weights that are not a layer's.

Critics with equalized learning rates (ProGAN, StyleGAN) or hand-rolled layers keep a raw
parameter and compute with ``F.conv2d(x, self.weight * self.scale, self.bias, ...)``. The weight
and bias are values off the input's path (:mod:`fastgp.engine.graph`): computed once per forward
with autograd recording. The op is then the :class:`~fastgp.engine.affine.LinearRule` /
:class:`~fastgp.engine.affine.ConvRule` of that forward's weights, whose gradients ``∂L/∂W`` and
``∂L/∂b`` accumulate in extra gradient slots and are sent to the weights as their cotangents
``W̄``, ``b̄``: one first-order autograd call pulls them back to the parameters, through the
scale or whatever made them. When the weight *is* a parameter that call is the identity.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from fastgp.engine.affine import Affine, ConvRule, LinearRule
from fastgp.engine.base import StepContext, UnsupportedLayerError
from fastgp.engine.graph import NodeRule

#: The functional ops, by the number of spatial dims (0: linear).
FUNCTIONAL_AFFINE = {torch.nn.functional.linear: 0, torch.nn.functional.conv1d: 1,
                     torch.nn.functional.conv2d: 2, torch.nn.functional.conv3d: 3}
#: The arguments after (input, weight, bias) of F.convNd, with their defaults.
CONV_OPTIONS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def _per_dim(value, dims: int) -> tuple:
    return (value,) * dims if isinstance(value, int) else tuple(value)


def _slot(ctx: StepContext, value: torch.Tensor | None) -> int | None:
    """A gradient slot for ``value`` when it carries parameters' gradients, else None."""
    if value is None or not value.requires_grad:
        return None
    return ctx.factor_slot(value)


class FunctionalAffine(NodeRule):
    """``F.linear(x, W, b)`` / ``F.convNd(x, W, b, stride, padding, dilation, groups)`` with
    ``W``, ``b`` off the input's path; ``options`` are the conv's literal arguments."""

    def __init__(self, name: str, dims: int, options: dict) -> None:
        self.name, self.dims, self.options = name, dims, options

    def _layer(self, weight: torch.Tensor, bias: torch.Tensor | None) -> SimpleNamespace:
        """What the rules read from a layer, for this forward's weights."""
        layer = SimpleNamespace(weight=weight, bias=bias)
        if self.dims:
            layer.kernel_size = tuple(weight.shape[2:])
            layer.stride = _per_dim(self.options["stride"], self.dims)
            layer.dilation = _per_dim(self.options["dilation"], self.dims)
            padding = self.options["padding"]
            layer.padding = padding if isinstance(padding, str) else _per_dim(padding, self.dims)
            layer.groups = self.options["groups"]
            layer.padding_mode = "zeros"
        return layer

    def forward(self, inputs, call, ctx):
        args = list(call.args) + [None] * (3 - len(call.args))
        weight = call.kwargs.get("weight", args[1])
        bias = call.kwargs.get("bias", args[2])
        if not isinstance(weight, torch.Tensor) or (bias is not None and
                                                    not isinstance(bias, torch.Tensor)):
            raise UnsupportedLayerError(f"{self.name}: its weight and bias must be tensors")
        layer = self._layer(weight.detach(), None if bias is None else bias.detach())
        weight_slot, bias_slot = _slot(ctx, weight), _slot(ctx, bias)
        if weight_slot is None:  # a constant weight: its gradient is computed and dropped
            weight_slot = ctx.factor_slot(None)
        rule: Affine = (ConvRule(layer, weight_slot, bias_slot, None) if self.dims
                        else LinearRule(layer, weight_slot, bias_slot, None))
        out, saved = rule.forward(inputs[0], ctx)
        saved["rule"] = rule
        return out, saved

    def adjoint(self, saved, a_out, ctx):
        return [saved["rule"].adjoint(saved, a_out, ctx)]

    def tangent(self, saved, t_in, ctx):
        return saved["rule"].tangent(saved, t_in[0], ctx)

    def backward(self, saved, g_out, ctx, need_input):
        return [saved["rule"].backward(saved, g_out, ctx, need_input[0])]
