"""When a module's class tells what it computes, and how to notice that a critic has changed.

The engine reads a critic from its layer classes and runs its own passes instead of calling the
modules. That is exact only when each module computes what its class says. It does not when:

- a subclass overrides ``forward`` (or ``__call__``), or an instance has its own ``forward``;
- a hook is registered on the module or globally (hooks run only when the module is called,
  and backward hooks only under autograd);
- a parametrization (``weight_norm``, ``orthogonal``...) or the older hook-based
  ``weight_norm`` recomputes the weight from other parameters.

Such a critic is refused with an error that names the layer (:func:`check_readable`). One
reparametrization is read: a spectral norm of a ``Linear``/``ConvNd`` weight, in either form
(``torch.nn.utils.parametrizations.spectral_norm`` or the hook-based
``torch.nn.utils.spectral_norm`` with no other hook on the layer), by :mod:`fastgp.engine.spectral`.

A critic may also change after it was read: a layer appended or replaced, a weight replaced by
a new ``nn.Parameter``, a layer frozen with ``requires_grad_(False)``, a hook added, train/eval
switched. :func:`structure_signature` captures all of that cheaply; ``FusedCritic`` compares it
before every step and reads the critic again when it differs, so its passes never run a stale
reading.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as module_globals
from torch.nn.utils import parametrize

from fastgp.engine.base import UnsupportedLayerError
from fastgp.engine.spectral import spectral_normalization
from fastgp.nn import Residual

#: Layer classes whose ``forward`` the engine's rules reproduce.
READABLE_CLASSES: tuple[type[nn.Module], ...] = (
    nn.Sequential, Residual, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU,
    nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Softplus, nn.ELU, nn.GELU, nn.LayerNorm, nn.GroupNorm,
    nn.Identity, nn.Flatten, nn.Unflatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.MaxPool1d,
    nn.MaxPool2d, nn.MaxPool3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.BatchNorm3d,
)

#: Classes the reader traces through: their ``forward`` (overridden or not) is what it reads.
CONTAINER_CLASSES: tuple[type[nn.Module], ...] = (nn.Sequential, Residual)

#: Layers whose spectrally normalized weight the engine reads.
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

_HOOK_DICTS = {"_forward_pre_hooks": "forward pre-hook", "_forward_hooks": "forward hook",
               "_backward_pre_hooks": "backward pre-hook", "_backward_hooks": "backward hook"}
_GLOBAL_HOOK_DICTS = {"_global_forward_pre_hooks": "forward pre-hook",
                      "_global_forward_hooks": "forward hook",
                      "_global_backward_pre_hooks": "backward pre-hook",
                      "_global_backward_hooks": "backward hook"}


def _layer(module: nn.Module, name: str) -> str:
    return f"layer {name or '<root>'!r} ({type(module).__name__})"


def _weight_hook_kind(hook: object) -> str | None:
    """The hook-based weight reparametrizations of ``torch.nn.utils`` by their class names."""
    kind = type(hook).__name__
    return {"SpectralNorm": "spectral_norm", "WeightNorm": "weight_norm"}.get(kind)


def check_readable(module: nn.Module, name: str) -> None:
    """Raise :class:`UnsupportedLayerError` naming the layer when ``module`` may compute
    something other than what its class's rule says."""
    norm = spectral_normalization(module) if isinstance(module, _WEIGHT_LAYERS) else None
    if parametrize.is_parametrized(module) and norm is None:
        names = ", ".join(sorted(module.parametrizations.keys()))
        raise UnsupportedLayerError(
            f"{_layer(module, name)} has a parametrization of {names} other than one "
            "spectral_norm of a Linear/Conv weight (weight_norm, orthogonal, ...): the engine "
            "reads torch.nn.utils.parametrizations.spectral_norm and torch.nn.utils."
            "spectral_norm only; use fastgp.gradient_penalty, which works with any critic")
    for attribute, kind in _HOOK_DICTS.items():
        hooks = getattr(module, attribute, None)
        if not hooks or (attribute == "_forward_pre_hooks" and norm is not None
                         and norm.hook is not None):
            continue  # the layer's only hook is spectral_norm's: spectral.py computes its weight
        for hook in hooks.values():
            reparametrization = _weight_hook_kind(hook)
            if reparametrization is not None:
                raise UnsupportedLayerError(
                    f"{_layer(module, name)} uses torch.nn.utils.{reparametrization}: its "
                    "weight is recomputed by a hook on every call, which the engine reads only "
                    "for a spectral_norm of a Linear/Conv weight with no other hook on the "
                    "layer; use fastgp.gradient_penalty, which works with any critic")
        raise UnsupportedLayerError(
            f"{_layer(module, name)} has a {kind}: the engine does not call the module, so "
            "the hook would never run; remove the hook or use fastgp.gradient_penalty")
    if "forward" in vars(module):
        raise UnsupportedLayerError(
            f"{_layer(module, name)} has its own forward assigned on the instance, so its "
            "class does not describe what it computes; use fastgp.gradient_penalty")
    base = next((cls for cls in type(module).__mro__ if cls in READABLE_CLASSES), None)
    if base is None or base in CONTAINER_CLASSES:
        return  # read from its forward, or (no rule for it) refused by the reader by name
    if type(module).forward is not base.forward or type(module).__call__ is not nn.Module.__call__:
        raise UnsupportedLayerError(
            f"{_layer(module, name)} is a subclass of {base.__name__} that overrides "
            f"{'forward' if type(module).forward is not base.forward else '__call__'}, so the "
            f"rule of {base.__name__} may not be what it computes; use "
            "fastgp.gradient_penalty, which works with any critic")


def check_no_global_hooks() -> None:
    """Module hooks registered for every module (``register_module_forward_hook``...) would
    not run on the engine's passes."""
    for attribute, kind in _GLOBAL_HOOK_DICTS.items():
        if getattr(module_globals, attribute, None):
            raise UnsupportedLayerError(
                f"a global module {kind} is registered (torch.nn.modules.module."
                f"register_module_{kind.replace(' ', '_').replace('-', '_')}): the engine does "
                "not call the modules, so it would never run; use fastgp.gradient_penalty")


def structure_signature(critic: nn.Module) -> tuple:
    """Everything about ``critic`` that the engine's reading depends on, as a comparable tuple.

    Per module, in call order and with repeats: its identity and class, train/eval mode, its
    parameters (identity and ``requires_grad``), its children, hooks and an instance
    ``forward``; plus the global hooks. Hooks count by their handles' ids, which are never
    reused: a hook removed and another added in its place (spectral_norm's pre-hook, which is
    read, replaced by one that is not) is a change. Parameter *values*, dtype and device are not
    part of it: the rules read them from the modules at every step.
    """
    entries: list[tuple] = [tuple(tuple(getattr(module_globals, attribute, {}).keys())
                                  for attribute in _GLOBAL_HOOK_DICTS)]
    stack = [critic]
    while stack:
        module = stack.pop()
        entries.append((
            id(module), type(module), module.training, "forward" in vars(module),
            tuple((key, id(value), value is not None and value.requires_grad)
                  for key, value in module._parameters.items()),
            tuple(tuple(getattr(module, attribute, {}).keys()) for attribute in _HOOK_DICTS),
            tuple((key, id(child)) for key, child in module._modules.items()),
        ))
        stack.extend(child for child in reversed(module._modules.values()) if child is not None)
    return tuple(entries)
