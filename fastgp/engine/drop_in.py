"""The engine behind the drop-in penalty: exact parameter gradients without double backward.

``fastgp.gradient_penalty(critic, real, fake)`` returns a penalty tensor ``P`` that the user adds
to their own W-loss and backpropagates. On the fast path ``P`` is computed by the engine's
forward, adjoint and tangent passes over the x̂ rows (:meth:`FusedCritic.penalty_gradients`),
which also give ``∂P/∂θ`` for every parameter. ``P`` is then tied to the parameters by an
``autograd.Function`` whose backward hands each parameter ``∂P/∂θ · grad_output``: autograd's
first-order backward of the user's loss accumulates them into ``.grad`` (so DDP's hooks fire),
and no graph of the input gradient is ever built.

Engines are cached per critic (and backend); a :class:`FusedCritic` reads its critic again when
the critic's structure, parameters, hooks or train/eval mode change, and a critic the reader
refused is tried again when its structure changes.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from fastgp.engine.base import UnsupportedLayerError
from fastgp.engine.fused_critic import FusedCritic
from fastgp.engine.readable import structure_signature

_ENGINES: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def engine_for(critic: nn.Module, backend: str | None,
               conditions: int = 0) -> tuple[FusedCritic | None, str | None]:
    """``(engine, None)`` when the engine reads ``critic`` (with ``conditions`` inputs after
    x), ``(None, reason)`` otherwise."""
    per_backend = _ENGINES.setdefault(critic, {})
    key = (backend, conditions)
    cached = per_backend.get(key)
    if isinstance(cached, FusedCritic):
        return cached, None
    signature = structure_signature(critic)
    if cached is not None and cached[0] == signature:
        return None, cached[1]  # refused, and unchanged since
    try:
        engine = FusedCritic(critic, backend=backend, conditions=conditions)
    except UnsupportedLayerError as error:
        per_backend[key] = (signature, str(error))
        return None, str(error)
    per_backend[key] = engine
    return engine, None


class _PenaltyWithGradients(torch.autograd.Function):
    """``P`` as a function of the parameters whose derivative is the precomputed ``∂P/∂θ``."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, grads: list[torch.Tensor | None],
                *parameters: torch.Tensor) -> torch.Tensor:
        ctx.grads = grads
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        return (None, None, *[None if grad is None else grad * grad_output
                              for grad in ctx.grads])


def explicit_penalty(engine: FusedCritic, x: torch.Tensor, penalty: str, weight: float,
                     center: float, conditions: tuple[torch.Tensor, ...] = ()
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, norms)`` at the points ``x`` with ``P`` differentiable in the critic's parameters
    (exactly, through precomputed gradients); ``conditions`` are constants."""
    # The passes run in the critic's dtype: an autocast region around the call (bf16/fp16
    # matmuls) would mix dtypes inside them.
    with torch.autocast(device_type=x.device.type, enabled=False):
        value, norms, grads = engine.penalty_gradients(x, penalty, weight, center, conditions)
    trainable = [(p, g) for p, g in zip(engine.parameters(), grads, strict=True)
                 if p.requires_grad]
    if not trainable:
        return value, norms
    parameters, parameter_grads = zip(*trainable, strict=True)
    return _PenaltyWithGradients.apply(value, list(parameter_grads), *parameters), norms
