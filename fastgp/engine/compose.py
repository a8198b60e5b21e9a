"""Critics as rules: sequences, residual blocks, and the reader that builds them from modules.

``build_rule(critic, parameters)`` reads a (nested) ``nn.Sequential`` of supported layers
into a :class:`Chain`, every entry in the order ``forward`` calls it (a module listed twice runs
twice). A ``Linear``/``ConvNd`` followed by ``ReLU``/``LeakyReLU`` becomes one rule
so that the bias add, the activation and its 1-byte mask are one fused op. Any other layer
raises :class:`UnsupportedLayerError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fastgp.engine.activations import LeakyRule, SmoothRule, smooth_derivatives
from fastgp.engine.affine import ConvRule, FlattenLinearRule, LinearRule
from fastgp.engine.base import Rule, Saved, StepContext, UnsupportedLayerError
from fastgp.engine.linear_maps import AdaptiveAvgPoolRule, AvgPoolRule, IdentityRule, ReshapeRule
from fastgp.engine.normalization import GroupNormRule, LayerNormRule
from fastgp.engine.readable import check_no_global_hooks, check_readable
from fastgp.nn import Residual

ParameterIndex = Callable[[nn.Parameter | None], int | None]

_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_AVG_POOLS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
_ADAPTIVE_POOLS = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


class Chain(Rule):
    """Rules applied one after the other."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.curvature = any(rule.curvature for rule in rules)

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        tape = []
        for rule in self.rules:
            x, saved = rule.forward(x, ctx)
            tape.append(saved)
        return x, {"tape": tape}

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        for rule, rule_saved in zip(reversed(self.rules), reversed(saved["tape"]), strict=True):
            a_out = rule.adjoint(rule_saved, a_out, ctx)
        return a_out

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        for rule, rule_saved in zip(self.rules, saved["tape"], strict=True):
            t_in = rule.tangent(rule_saved, t_in, ctx)
            if ctx.release_after_tangent:
                rule_saved.clear()
        return t_in

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        pairs = list(zip(self.rules, saved["tape"], strict=True))
        for position in range(len(pairs) - 1, -1, -1):
            rule, rule_saved = pairs[position]
            g_out = rule.backward(rule_saved, g_out, ctx, need_input or position > 0)
            rule_saved.clear()  # the backward is the last pass: free the layer's tensors now
        return g_out


class ResidualRule(Rule):
    """``y = shortcut(x) + body(x)`` (:class:`fastgp.nn.Residual`): every pass sums the branches."""

    def __init__(self, body: Chain, shortcut: Chain) -> None:
        self.body, self.shortcut = body, shortcut
        self.curvature = body.curvature or shortcut.curvature

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        body_out, body_saved = self.body.forward(x, ctx)
        shortcut_out, shortcut_saved = self.shortcut.forward(x, ctx)
        return shortcut_out + body_out, {"body": body_saved, "shortcut": shortcut_saved}

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return (self.shortcut.adjoint(saved["shortcut"], a_out, ctx)
                + self.body.adjoint(saved["body"], a_out, ctx))

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return (self.shortcut.tangent(saved["shortcut"], t_in, ctx)
                + self.body.tangent(saved["body"], t_in, ctx))

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        body = self.body.backward(saved["body"], g_out, ctx, need_input)
        shortcut = self.shortcut.backward(saved["shortcut"], g_out, ctx, need_input)
        return shortcut + body if need_input else None


def _leaky_slope(module: nn.Module) -> float | None:
    if isinstance(module, nn.ReLU):
        return 0.0
    if isinstance(module, nn.LeakyReLU):
        return float(module.negative_slope)
    return None


def _parameter_index(index: ParameterIndex, module: nn.Module, name: str) -> ParameterIndex:
    """``index`` that names the layer when one of its weights is not a parameter of the critic
    (e.g. a weight recomputed from another parameter by a hook, as weight norm does)."""
    def lookup(parameter: nn.Parameter | None) -> int | None:
        try:
            return index(parameter)
        except KeyError:
            raise UnsupportedLayerError(
                f"layer {name!r} ({type(module).__name__}) uses a weight that is not a registered "
                "parameter of the critic, so the engine cannot say where its gradient belongs; "
                "use fastgp.gradient_penalty, which works with any critic") from None
    return lookup


def _layer_rule(module: nn.Module, name: str, index: ParameterIndex,
                slope: float | None) -> Rule:
    """The rule of one (non-sequence) module; ``slope`` fuses a following (Leaky)ReLU."""
    index = _parameter_index(index, module, name)
    if isinstance(module, nn.Linear):
        return LinearRule(module, index(module.weight), index(module.bias), slope)
    if type(module) in _CONVS:
        return ConvRule(module, index(module.weight), index(module.bias), slope)
    leaky = _leaky_slope(module)
    if leaky is not None:
        return LeakyRule(leaky)
    derivatives = smooth_derivatives(module)
    if derivatives is not None:
        return SmoothRule(module, derivatives)
    if isinstance(module, nn.LayerNorm):
        return LayerNormRule(module, index(module.weight), index(module.bias))
    if isinstance(module, nn.GroupNorm):
        return GroupNormRule(module, index(module.weight), index(module.bias))
    if isinstance(module, nn.Identity):
        return IdentityRule(module)
    if isinstance(module, nn.Flatten | nn.Unflatten):
        return ReshapeRule(module)
    if type(module) in _AVG_POOLS:
        return AvgPoolRule(module, _AVG_POOLS[type(module)])
    if type(module) in _ADAPTIVE_POOLS:
        return AdaptiveAvgPoolRule(module, _ADAPTIVE_POOLS[type(module)])
    if isinstance(module, Residual):
        return ResidualRule(_chain(module.body, f"{name}.body", index),
                            _chain(module.shortcut, f"{name}.shortcut", index))
    if isinstance(module, _BATCH_NORMS):
        raise UnsupportedLayerError(
            f"layer {name!r} ({type(module).__name__}) mixes the samples of a batch, so a "
            "per-sample gradient penalty is not defined for it (WGAN-GP paper §4); use "
            "LayerNorm or GroupNorm instead")
    raise UnsupportedLayerError(
        f"FusedCritic has no rule for layer {name!r} ({type(module).__name__}). Supported: "
        "Linear, Conv1d/2d/3d, ReLU, LeakyReLU, SiLU, Tanh, Sigmoid, Softplus, ELU, GELU, "
        "LayerNorm, GroupNorm, Flatten, Unflatten, AvgPool, AdaptiveAvgPool, Identity, "
        "fastgp.nn.Residual, nested nn.Sequential. fastgp.gradient_penalty works with any critic.")


def _flatten(module: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    """The layers of ``module`` in the order its ``forward`` calls them.

    Every entry of a ``Sequential`` counts, also a module that appears twice (one activation
    object reused between layers, a tied layer): ``nn.Sequential.forward`` calls it twice, while
    ``named_children`` would list it once.
    """
    check_readable(module, name)
    if isinstance(module, nn.Sequential):
        return [pair for child_name, child in module._modules.items() if child is not None
                for pair in _flatten(child, f"{name}.{child_name}" if name else child_name)]
    return [(name or type(module).__name__, module)]


def _is_full_flatten(module: nn.Module) -> bool:
    return isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1


def _chain(module: nn.Module, name: str, index: ParameterIndex) -> Chain:
    layers = _flatten(module, name)
    rules: list[Rule] = []
    position = 0
    while position < len(layers):
        layer_name, layer = layers[position]
        following = layers[position + 1][1] if position + 1 < len(layers) else None
        if _is_full_flatten(layer) and isinstance(following, nn.Linear):
            after = layers[position + 2][1] if position + 2 < len(layers) else None
            slope = None if after is None else _leaky_slope(after)
            linear_index = _parameter_index(index, following, layers[position + 1][0])
            rules.append(FlattenLinearRule(following, linear_index(following.weight),
                                           linear_index(following.bias), slope))
            position += 2 if slope is None else 3
            continue
        slope = None if following is None else _leaky_slope(following)
        fuses = slope is not None and isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
        rules.append(_layer_rule(layer, layer_name, index, slope if fuses else None))
        position += 2 if fuses else 1
    return Chain(rules)


def build_rule(critic: nn.Module, parameters: list[nn.Parameter]) -> Chain:
    """The engine's view of ``critic``, its rules referring to ``parameters`` by position (the
    gradients are accumulated in that order); raises :class:`UnsupportedLayerError` for unknown
    layers and for modules whose behaviour their class does not tell (:func:`check_readable`)."""
    check_no_global_hooks()
    position = {id(p): i for i, p in enumerate(parameters)}
    return _chain(critic, "", lambda p: None if p is None else position[id(p)])
