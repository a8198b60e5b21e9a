"""Spectrally normalized weights (``torch.nn.utils.parametrizations.spectral_norm``).

The layer computes with ``W̃ = W / σ``, ``σ = uᵀ W_mat v``, where ``u`` and ``v`` come from the
power iteration and are constants for the gradient (PyTorch computes them under ``no_grad``).
The engine's passes run the layer's rule on ``W̃`` — read once per step under
``parametrize.cached()``, so the power iteration advances once per step, as one forward of the
module does — and accumulate ``G = ∂L/∂W̃`` in an extra gradient slot. At the end of the step
``G`` is pulled back to the raw weight exactly as autograd would::

    ∂L/∂W = G/σ − (⟨G, W̃⟩/σ) · u vᵀ        (reshaped like W)

The older hook-based ``torch.nn.utils.spectral_norm`` is refused by name (see
:mod:`fastgp.engine.readable`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm


def spectral_normalization(module: nn.Module) -> _SpectralNorm | None:
    """The ``_SpectralNorm`` of a module whose only parametrization is a spectral norm of a
    matrix- or kernel-shaped ``weight``; None otherwise."""
    if not parametrize.is_parametrized(module):
        return None
    if set(module.parametrizations.keys()) != {"weight"}:
        return None
    chain = module.parametrizations.weight
    if len(chain) != 1 or not isinstance(chain[0], _SpectralNorm) or chain.original.dim() < 2:
        return None
    return chain[0]


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
        self.normalized.append(module)
        return len(self.parameters) + len(self.normalized) - 1


def reading_normalized_weights(modules: list[nn.Module]):
    """The context of one step: every ``W̃`` computed once (one power iteration) and reused."""
    return parametrize.cached() if modules else contextlib.nullcontext()


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
        raw = module.parametrizations.weight.original
        normalized = module.weight
        u, v = norm._u, norm._v
        sigma = torch.vdot(u, torch.mv(norm._reshape_weight_to_matrix(raw), v))
        outer = torch.outer(u, v)
        if norm.dim != 0:  # the matrix has dim first: move it back
            order = [norm.dim, *(d for d in range(raw.dim()) if d != norm.dim)]
            shape = [raw.shape[d] for d in order]
            inverse = [order.index(d) for d in range(raw.dim())]
            outer = outer.view(shape).permute(inverse)
        else:
            outer = outer.view(raw.shape)
        pulled = grad / sigma - (torch.sum(grad * normalized) / sigma) * outer
        index = positions(raw)
        grads[index] = pulled if grads[index] is None else grads[index] + pulled
        grads[slot] = None
