"""Spectrally normalized weights, in both of PyTorch's forms.

- ``torch.nn.utils.parametrizations.spectral_norm``: ``module.weight`` is a parametrization of
  the raw weight ``module.parametrizations.weight.original``, computed when it is read.
- ``torch.nn.utils.spectral_norm`` (the older form): a forward pre-hook ``SpectralNorm`` computes
  the weight from the parameter ``weight_orig`` and the buffers ``weight_u``, ``weight_v`` when
  the module is called, and stores it as the plain attribute ``module.weight``.

Both compute ``W̃ = W / σ``, ``σ = uᵀ W_mat v``, where ``W_mat`` is ``W`` with ``dim`` first,
flattened to a matrix, and ``u`` and ``v`` come from the power iteration: in training mode each
computation of ``W̃`` first advances it in place (``n_power_iterations`` steps), in eval mode it
uses ``u``, ``v`` as they are. They are constants for the gradient (PyTorch computes them under
``no_grad``). The engine's passes run the layer's rule on ``W̃`` — computed once per step by
:func:`reading_normalized_weights`, so the power iteration advances once per step, as one
forward of the module does — and accumulate ``G = ∂L/∂W̃`` in an extra gradient slot. At the end
of the step ``G`` is pulled back to the raw weight exactly as autograd would::

    ∂L/∂W = G/σ − (⟨G, W̃⟩/σ) · u vᵀ        (reshaped like W)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm

from fastgp.engine.base import UnsupportedLayerError


class SpectralNormalization(NamedTuple):
    """One spectrally normalized weight of either form: the raw weight ``W`` (a parameter of the
    critic), the power iteration's vectors ``u`` and ``v``, the dimension of ``W`` that is the
    rows of ``W_mat``, and the older form's pre-hook (None for the parametrization)."""

    raw: nn.Parameter
    u: torch.Tensor
    v: torch.Tensor
    dim: int
    hook: SpectralNorm | None

    def matrix(self) -> torch.Tensor:
        """``W_mat``: ``W`` with ``dim`` moved first, flattened to ``(W.shape[dim], −1)``."""
        weight = self.raw
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.dim()) if d != self.dim))
        return weight.reshape(weight.shape[0], -1)

    def sigma(self) -> torch.Tensor:
        """``σ = uᵀ W_mat v``."""
        return torch.dot(self.u, torch.mv(self.matrix(), self.v))

    def outer(self) -> torch.Tensor:
        """``u vᵀ`` shaped like ``W`` (:meth:`matrix`'s reshape undone)."""
        outer = torch.outer(self.u, self.v)
        if self.dim == 0:
            return outer.view(self.raw.shape)
        order = [self.dim, *(d for d in range(self.raw.dim()) if d != self.dim)]
        return outer.view([self.raw.shape[d] for d in order]).permute(
            [order.index(d) for d in range(self.raw.dim())])


def spectral_normalization(module: nn.Module) -> SpectralNormalization | None:
    """The spectral norm of ``module.weight`` when it is the module's only reparametrization:
    its only parametrization, or (unparametrized) its only forward pre-hook; None otherwise."""
    if parametrize.is_parametrized(module):
        return _parametrization(module)
    return _hook(module)


def _parametrization(module: nn.Module) -> SpectralNormalization | None:
    """A parametrization: one ``_SpectralNorm`` of a matrix- or kernel-shaped ``weight``."""
    if set(module.parametrizations.keys()) != {"weight"}:
        return None
    chain = module.parametrizations.weight
    if len(chain) != 1 or not isinstance(chain[0], _SpectralNorm) or chain.original.dim() < 2:
        return None
    norm = chain[0]
    return SpectralNormalization(chain.original, norm._u, norm._v, norm.dim, None)


def _hook(module: nn.Module) -> SpectralNormalization | None:
    """The older form: one forward pre-hook, exactly a ``SpectralNorm`` of ``weight`` (a
    subclass could compute another weight)."""
    hooks = list(module._forward_pre_hooks.values())
    if len(hooks) != 1 or type(hooks[0]) is not SpectralNorm or hooks[0].name != "weight":
        return None
    hook = hooks[0]
    return SpectralNormalization(module.weight_orig, module.weight_u, module.weight_v, hook.dim,
                                 hook)


class ParameterPositions:
    """Where each parameter's gradient goes (its position in ``parameters``), plus one extra
    slot per spectrally normalized weight ``W̃``, after the parameters."""

    def __init__(self, parameters: list[nn.Parameter]) -> None:
        self.parameters = parameters
        self._position = {id(p): i for i, p in enumerate(parameters)}
        self.normalized: list[nn.Module] = []  # modules whose W̃ has slot len(parameters) + k

    def __call__(self, parameter: nn.Parameter | None) -> int | None:
        return None if parameter is None else self._position[id(parameter)]

    def weight(self, module: nn.Module) -> int:
        """The slot of ``module.weight``: its parameter's, or an extra one for ``W̃``."""
        if spectral_normalization(module) is None:
            return self(module.weight)
        if module.training and any(m is module for m in self.normalized):
            # Each call of the module runs one power iteration in eager PyTorch, so two calls
            # of one forward use two different W̃; the engine's passes share one per step.
            raise UnsupportedLayerError(
                f"the spectrally normalized {type(module).__name__} is called twice in one "
                "forward in training mode: PyTorch advances its power iteration on each call "
                "(two different normalized weights), the engine once per step; call "
                "critic.eval() for the penalty, or use fastgp.gradient_penalty(method="
                "'autograd')")
        self.normalized.append(module)
        return len(self.parameters) + len(self.normalized) - 1


@contextlib.contextmanager
def reading_normalized_weights(modules: list[nn.Module]) -> Iterator[None]:
    """The context of one step: every ``W̃`` computed once (one power iteration in training
    mode) and reused by all the passes, however often the critic calls its layer.

    A parametrized weight is computed at its first read and cached (``parametrize.cached()``).
    The older form's pre-hook would compute its weight only when the module is called, which the
    engine never does: here each is computed once and stored as ``module.weight``, as the hook
    does on a call, so the rules read it where they read any weight.
    """
    hooked = {id(module): module for module in modules
              if spectral_normalization(module).hook is not None}
    with parametrize.cached() if modules else contextlib.nullcontext():
        for module in hooked.values():
            _normalize_by_hook(module)
        yield


def _normalize_by_hook(module: nn.Module) -> None:
    """``module.weight = W̃``, with the power iteration the hook runs in training mode."""
    hook = spectral_normalization(module).hook
    with torch.no_grad():  # W̃ is a constant of the passes; its gradient is pulled back by hand
        module.weight = hook.compute_weight(module, do_power_iteration=module.training)


def pull_back(modules: list[nn.Module], parameters: list[nn.Parameter],
              grads: list[torch.Tensor | None], positions: ParameterPositions) -> None:
    """Add each extra slot's ``∂L/∂W̃`` to its raw weight's gradient (inside the step's
    :func:`reading_normalized_weights`, so ``W̃``, ``u`` and ``v`` are this step's)."""
    for k, module in enumerate(modules):
        slot = len(parameters) + k
        grad = grads[slot]
        if grad is None:
            continue
        norm = spectral_normalization(module)
        sigma = norm.sigma()
        pulled = grad / sigma - (torch.sum(grad * module.weight) / sigma) * norm.outer()
        index = positions(norm.raw)
        grads[index] = pulled if grads[index] is None else grads[index] + pulled
        grads[slot] = None
