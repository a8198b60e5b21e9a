"""What every layer rule of the engine implements, and the per-step context they share.

A critic ``C = f_L ∘ … ∘ f_1`` is run as four explicit passes (docs/engine.md has the math):

1. ``forward``  over all rows of the step batch (interpolated, real and fake samples stacked),
   saving per layer only what the later passes need (inputs of weight layers, 1-byte masks);
2. ``adjoint``  over the penalty rows only: ``a_{l-1} = J_lᵀ a_l`` from ``a_L = 1``, which ends in
   the input gradient ``g = ∇ₓC(x̂)``;
3. ``tangent``  over the penalty rows, from ``t_0 = ∂P/∂g``: ``t_l = J_l t_{l-1}`` — the reverse of
   the adjoint pass. Each weight layer adds the penalty's weight gradient ``a_l ⊗ t_{l-1}``;
   each layer with curvature adds ``h̄_{l-1}``, the cotangent its second derivative sends into
   its input (zero for piecewise-linear layers, so they have no such term);
4. ``backward`` over the rows with a non-zero cotangent: the W-loss rows (``∓1/B`` at the
   output) and, when some layer has curvature, the penalty rows carrying the ``h̄`` terms. Each
   weight layer adds its ordinary weight and bias gradients.

Rules are stateless: what a pass saves lives in a ``Saved`` dict that the graph hands back to
the next pass, so a whole step is plain tensor code that ``torch.compile`` can trace.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Saved = dict[str, object]


@dataclass
class StepContext:
    """Rows and accumulators shared by the rules during one (micro-batch) step.

    ``penalty_rows`` are the rows of the step batch where the penalty is taken; ``backward_rows``
    the rows the final backward runs over (None: all rows, without a slicing op);
    ``penalty_in_backward`` the penalty rows as a slice of the backward rows (None when the
    backward does not visit them). ``grads`` holds one
    accumulated gradient per critic parameter, by index.
    """

    penalty_rows: slice | None
    backward_rows: slice | None
    penalty_in_backward: slice | None
    leaky: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    mask_product: Callable[..., torch.Tensor]
    grads: list[torch.Tensor | None] = field(default_factory=list)
    #: No backward follows the tangent pass: each layer's saved tensors are freed after it.
    release_after_tangent: bool = False
    #: The critic's inputs after x for the rows of this pass (constants: no gradient).
    conditions: tuple[torch.Tensor, ...] = ()
    #: ``(f, f̄)`` pairs: values off the input's path that depend on parameters (a label
    #: embedding, a learned gain) and their cotangents, pulled back to the parameters by one
    #: first-order autograd call at the end of the passes (:meth:`GraphRule.factor_gradients`).
    factor_cotangents: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    #: ``(f, slot)``: off-path values used as a layer's weight (``F.conv2d(x, w * c)``), whose
    #: cotangent is what the rules accumulate in ``grads[slot]``.
    factor_slots: list[tuple[torch.Tensor | None, int]] = field(default_factory=list)

    def penalty_part(self, saved: torch.Tensor) -> torch.Tensor:
        return saved if self.penalty_rows is None else saved[self.penalty_rows]

    def backward_part(self, saved: torch.Tensor) -> torch.Tensor:
        return saved if self.backward_rows is None else saved[self.backward_rows]

    def add_grad(self, index: int, value: torch.Tensor) -> None:
        current = self.grads[index]
        self.grads[index] = value if current is None else current.add_(value)

    def add_matmul_grad(self, index: int, left_t: torch.Tensor, right: torch.Tensor) -> None:
        """``grads[index] += left_tᵀ @ right`` without a temporary when the gradient exists."""
        current = self.grads[index]
        if current is None:
            self.grads[index] = left_t.t() @ right
        else:
            current.addmm_(left_t.t(), right)

    def add_factor_cotangent(self, factor: torch.Tensor, cotangent: torch.Tensor,
                             rows: slice | None) -> None:
        """``f̄ += cotangent`` for the off-path value ``factor``; ``rows``: the rows of ``factor``
        the cotangent covers (None: all of them)."""
        if rows is not None:
            full = cotangent.new_zeros(factor.shape)
            full[rows] = cotangent
            cotangent = full
        self.factor_cotangents.append((factor, cotangent))

    def factor_slot(self, factor: torch.Tensor | None) -> int:
        """A new gradient slot whose sum becomes ``factor``'s cotangent (None: dropped)."""
        self.grads.append(None)
        self.factor_slots.append((factor, len(self.grads) - 1))
        return len(self.grads) - 1

    def inject(self, grad_input: torch.Tensor, curvature: torch.Tensor | None) -> torch.Tensor:
        """Add a curvature cotangent ``h̄`` (penalty rows) to a backward result (backward rows)."""
        if curvature is None or self.penalty_in_backward is None:
            return grad_input
        grad_input[self.penalty_in_backward] += curvature
        return grad_input


class Rule(ABC):
    """One layer (or block) of a critic, as the four passes of the engine see it."""

    #: True when the layer's second derivative is not zero almost everywhere: its tangent pass
    #: then produces a curvature cotangent and the final backward must visit the penalty rows.
    curvature: bool = False

    @abstractmethod
    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        """The layer over all rows of the step batch, and what the later passes need."""

    @abstractmethod
    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """``Jᵀ a`` over the penalty rows; may save ``a_out`` for the tangent pass."""

    @abstractmethod
    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """``J t`` over the penalty rows; adds the penalty's parameter gradients and saves ``h̄``."""

    @abstractmethod
    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        """``Jᵀ g`` over the backward rows (plus ``h̄``); adds the ordinary parameter gradients."""


class UnsupportedLayerError(TypeError):
    """A critic contains a layer the engine has no rule for."""
