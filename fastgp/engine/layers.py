"""The rule of each layer class the engine knows, by the layer's module.

``layer_rule(module, name, index, slope)`` maps a ``Linear``/``ConvNd`` (optionally with the
slope of a following (Leaky)ReLU fused into it, so that the bias add, the activation and its
1-byte mask are one op), an activation, a norm, a pool, a dropout, ``Flatten``/``Unflatten`` or
``Identity`` to its rule, with its parameters given as positions by ``index``. Any other layer
raises :class:`UnsupportedLayerError` naming it. How a critic's code combines its layers is
read by :mod:`fastgp.engine.trace`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fastgp.engine.activations import LeakyRule, SmoothRule, smooth_derivatives
from fastgp.engine.affine import ConvRule, LinearRule
from fastgp.engine.base import Rule, UnsupportedLayerError
from fastgp.engine.dropout import DropoutRule
from fastgp.engine.linear_maps import (
    AdaptiveAvgPoolRule,
    AvgPoolRule,
    IdentityRule,
    PadRule,
    ReshapeRule,
    Then,
)
from fastgp.engine.normalization import (
    BatchNormEvalRule,
    GroupNormRule,
    InstanceNormRule,
    LayerNormRule,
)
from fastgp.engine.pooling import MaxPoolRule
from fastgp.engine.spectral import ParameterPositions

ParameterIndex = Callable[[nn.Parameter | None], int | None]

CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_AVG_POOLS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
_ADAPTIVE_POOLS = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
_MAX_POOLS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
# Each dropout with the spatial dims of its channel-wise mask (None: element-wise). Alpha and
# feature-alpha dropout are not among them: they are refused by name.
_DROPOUTS = {nn.Dropout: None, nn.Dropout1d: 1, nn.Dropout2d: 2, nn.Dropout3d: 3}
_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


def uses_running_statistics(module: nn.Module) -> bool:
    """A BatchNorm that normalizes each sample by its running statistics (eval mode): a fixed
    per-channel affine map, under which a per-sample penalty is defined."""
    return (not module.training and module.track_running_stats
            and module.running_mean is not None and module.running_var is not None)


def leaky_slope(module: nn.Module) -> float | None:
    if isinstance(module, nn.ReLU):
        return 0.0
    if isinstance(module, nn.LeakyReLU):
        return float(module.negative_slope)
    return None


def parameter_index(index: ParameterPositions, module: nn.Module, name: str) -> ParameterIndex:
    """``index`` that names the layer when one of its weights is not a parameter of the critic
    (e.g. a weight recomputed from another parameter by a hook, as weight norm does)."""
    def lookup(parameter: nn.Parameter | None) -> int | None:
        try:
            return index(parameter)
        except KeyError:
            raise _not_a_parameter(module, name) from None
    return lookup


def weight_slot(index: ParameterPositions, module: nn.Module, name: str) -> int:
    """Where ``module.weight``'s gradient goes (an extra slot for a spectrally normalized one)."""
    try:
        return index.weight(module)
    except KeyError:
        raise _not_a_parameter(module, name) from None


def _not_a_parameter(module: nn.Module, name: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"layer {name!r} ({type(module).__name__}) uses a weight that is not a registered "
        "parameter of the critic, so the engine cannot say where its gradient belongs; "
        "use fastgp.gradient_penalty, which works with any critic")


def layer_rule(module: nn.Module, name: str, positions: ParameterPositions,
               slope: float | None) -> Rule:
    """The rule of one (non-sequence) module; ``slope`` fuses a following (Leaky)ReLU."""
    index = parameter_index(positions, module, name)
    if isinstance(module, nn.Linear):
        return LinearRule(module, weight_slot(positions, module, name), index(module.bias), slope)
    if isinstance(module, tuple(CONVS)):
        weights = (weight_slot(positions, module, name), index(module.bias))
        if module.padding_mode == "zeros":
            return ConvRule(module, *weights, slope)
        # torch pads with the mode first, then convolves without padding: so does the engine.
        return Then(PadRule(module._reversed_padding_repeated_twice, module.padding_mode),
                    ConvRule(module, *weights, slope, padding=(0,) * len(module.kernel_size)))
    leaky = leaky_slope(module)
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
    if type(module) in _MAX_POOLS:
        if module.return_indices:
            raise UnsupportedLayerError(f"layer {name!r} (MaxPool) returns indices: the engine "
                                        "reads pools that return the pooled tensor only")
        return MaxPoolRule(module, _MAX_POOLS[type(module)])
    if isinstance(module, _INSTANCE_NORMS):
        if module.track_running_stats:
            raise UnsupportedLayerError(
                f"layer {name!r} ({type(module).__name__}) tracks running statistics: in "
                "training they change with every call, which the engine's passes do not "
                "replay; the default InstanceNorm (track_running_stats=False) is read")
        return InstanceNormRule(module, index(module.weight), index(module.bias))
    dropout = next((cls for cls in _DROPOUTS if isinstance(module, cls)), None)
    if dropout is not None:
        # Training mode: one mask drawn per forward, shared by the passes after it.
        return DropoutRule(module, _DROPOUTS[dropout]) if module.training else IdentityRule(module)
    if isinstance(module, _BATCH_NORMS) and uses_running_statistics(module):
        return BatchNormEvalRule(module, index(module.weight), index(module.bias))
    if isinstance(module, _BATCH_NORMS):
        raise UnsupportedLayerError(
            f"layer {name!r} ({type(module).__name__}) in training mode mixes the samples of "
            "a batch, so a per-sample gradient penalty is not defined for it (WGAN-GP paper "
            "§4); use LayerNorm, GroupNorm or InstanceNorm (in eval mode with running "
            "statistics BatchNorm is a per-channel affine map, which the engine reads)")
    raise UnsupportedLayerError(
        f"FusedCritic has no rule for layer {name!r} ({type(module).__name__}). Supported: "
        "Linear, Conv1d/2d/3d (zeros, reflect, replicate or circular padding), ReLU, LeakyReLU, "
        "SiLU, Tanh, Sigmoid, Softplus, ELU, GELU, LayerNorm, GroupNorm, InstanceNorm, "
        "AvgPool, AdaptiveAvgPool, MaxPool, Flatten, Unflatten, Identity, Dropout/Dropout1d/"
        "2d/3d (eval, or training: one mask per forward pass; not alpha dropout), and modules "
        "whose forward combines these. fastgp.gradient_penalty works with any critic.")
