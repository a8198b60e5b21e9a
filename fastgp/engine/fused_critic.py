"""``FusedCritic``: the exact WGAN-GP critic step without autograd's double backward.

For a critic ``C`` the step computes, for real ``r``, fake ``f`` and ``x̂ = ε·r + (1−ε)·f``::

    W       = mean_i C(r_i) − mean_i C(f_i)                  (the Wasserstein estimate)
    P       = λ · mean_i φ(‖∇ₓC(x̂_i)‖₂)                     (φ(n) = (n−c)², or max(0, n−c)²)
    loss    = −W + P

and writes ``∂loss/∂θ`` into every parameter's ``.grad``, with the four first-order passes of
:mod:`fastgp.engine.base` over one stacked batch ``[x̂; r; f]``. R1 and R2 take the penalty
``γ/2 · mean_i ‖∇ₓC(x_i)‖²`` at the real (R1) or fake (R2) rows instead, so the batch is ``[r; f]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from fastgp.engine.base import StepContext
from fastgp.engine.readable import structure_signature
from fastgp.engine.spectral import pull_back, reading_normalized_weights
from fastgp.engine.trace import read_critic
from fastgp.ops import Kernels, kernels_for
from fastgp.ops.backend import BACKENDS
from fastgp.validation import (
    check_batched_float,
    check_eps,
    check_finite,
    check_one_score_per_sample,
    check_same_layout,
    flag,
    integer,
    penalty_scalars,
)

PENALTIES = ("gp", "lp", "r1", "r2", "none")
#: Where a step's time goes, in the order the passes run (see ``FusedCritic.phase_hook``).
PASSES = ("forward", "adjoint (input gradient)", "norm + penalty",
          "tangent (penalty's parameter gradients)", "backward (W-loss and curvature)")


def _in_layout_of(parameter: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor | None:
    """``grad`` with the shape, strides, dtype and device of ``parameter``.

    The passes may produce a gradient in another layout (a convolution's weight gradient comes
    out channels-last from channels-last activations). Optimizers that walk the raw storage —
    ``Adam(fused=True)`` on CPU — would then update the wrong elements without an error, and
    CUDA's fused kernels reject mixed layouts, so the gradient is copied into the parameter's.
    """
    if grad is None:
        return None
    if (grad.stride() == parameter.stride() and grad.dtype == parameter.dtype
            and grad.device == parameter.device):
        return grad
    copy = torch.empty_strided(parameter.shape, parameter.stride(), dtype=parameter.dtype,
                               device=parameter.device)
    return copy.copy_(grad)


class CriticStep(NamedTuple):
    """What one step computed (detached; no device sync until a value is read).

    ``loss = −wasserstein + penalty``; ``penalty`` is the term as added to the loss (×k on the
    steps where lazy regularization applies it, 0 on the others); ``norms`` are the per-sample
    input-gradient norms ``(B,)``, or None on a step without penalty.
    """

    loss: torch.Tensor
    wasserstein: torch.Tensor
    penalty: torch.Tensor
    norms: torch.Tensor | None

    def norm_stats(self) -> dict[str, float]:
        """Mean, standard deviation, min and max of the gradient norms (one device sync)."""
        if self.norms is None:
            return {}
        n = self.norms.double()
        std = n.std(unbiased=False) if n.numel() > 1 else n.new_zeros(())
        values = torch.stack([n.mean(), std, n.min(), n.max()]).tolist()
        return dict(zip(("mean", "std", "min", "max"), values, strict=True))


class FusedCritic:
    """Runs the WGAN-GP critic step of a supported critic with explicit first-order passes.

    Args:
        critic: any ``nn.Module`` whose ``forward`` combines the layers of
            :mod:`fastgp.engine.layers` with the tensor ops of :mod:`fastgp.engine.tensor_ops`
            (Linear, ConvNd, (Leaky)ReLU, smooth activations, LayerNorm, GroupNorm, pooling,
            padding, dropout, Flatten/Unflatten, Identity; skips, views, sums, cat and scaling
            between them),
            read from its code by :mod:`fastgp.engine.trace`. Anything else raises
            :class:`~fastgp.engine.UnsupportedLayerError`; :func:`fastgp.gradient_penalty` works
            with any critic.
        penalty_every: lazy regularization (StyleGAN2): the penalty is computed on every k-th
            step only, with its weight multiplied by k, and skipped on the others. This changes
            the algorithm (the penalty's gradient arrives in bursts); 1, the default, is WGAN-GP.
        channels_last: run 4-D (image) batches in channels-last memory format, which the CPU and
            GPU convolution kernels prefer; None picks it for 4-D inputs.
        backend: implementation of the fused ops (``auto``/``triton``/``native``/``torch``);
            None uses :func:`fastgp.get_backend`.
        conditions: how many conditional inputs (labels, label maps, source images) the
            critic's ``forward`` takes after ``x``: they are constants of the penalty (no
            gradient) and are given to :meth:`penalty_gradients`; :meth:`step` runs critics
            without them.
    """

    def __init__(self, critic: nn.Module, *, penalty_every: int = 1,
                 channels_last: bool | None = None, backend: str | None = None,
                 conditions: int = 0) -> None:
        if not isinstance(critic, nn.Module):
            raise TypeError(f"critic must be an nn.Module, got {type(critic).__name__}")
        self.penalty_every = integer("penalty_every", penalty_every)
        self.conditions = integer("conditions", conditions, minimum=0)
        self.channels_last = None if channels_last is None else flag("channels_last",
                                                                      channels_last)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
        self.critic = critic
        self.backend = backend
        self._read_critic()
        self._phase = 0  # step number modulo penalty_every; 0 is a penalty step
        #: Called with the name of each phase of ``PASSES`` as it ends (the profiler's timer).
        self.phase_hook: Callable[[str], None] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def parameters(self) -> Iterator[nn.Parameter]:
        """The critic's parameters as the engine read them (``critic.parameters()`` at the last
        reading), in the order of the gradients :meth:`penalty_gradients` returns."""
        return iter(self._read_parameters)

    def _read_critic(self) -> None:
        """Read the critic's layers into rules (raises for a critic the engine cannot read)."""
        self._read_parameters = list(self.critic.parameters())
        self.rule = read_critic(self.critic, self._read_parameters, 1 + self.conditions)
        self._signature = structure_signature(self.critic)

    def _refresh(self) -> None:
        """Read the critic again when it changed since the last reading (a layer added or
        replaced, a new weight, a frozen layer, a hook, train/eval), so that no step runs on a
        stale reading. ``torch.compile`` traces the comparison and guards on it, so a change
        recompiles the step."""
        if structure_signature(self.critic) != self._signature:
            self._read_critic()

    def step(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        *,
        penalty: str = "gp",
        weight: float = 10.0,
        center: float = 1.0,
        eps: torch.Tensor | None = None,
        micro_batch: int | None = None,
        check_inputs: bool = True,
    ) -> CriticStep:
        """One critic step: sets every parameter's ``.grad`` to ``∂loss/∂θ`` (replacing it).

        Args:
            real, fake: batches of the same shape ``(B, ...)``, in the critic's dtype and device.
                Treated as constants (no gradient reaches the generator).
            penalty: ``"gp"`` (WGAN-GP, two-sided at ``center``), ``"lp"`` (one-sided,
                WGAN-LP), ``"r1"`` / ``"r2"`` (``weight/2 · E‖∇C‖²`` at real / fake samples) or
                ``"none"``.
            weight: λ of GP/LP, γ of R1/R2.
            center: c of GP/LP (1 for WGAN-GP, 0 for a zero-centred penalty).
            eps: interpolation weights ``(B,)`` for GP/LP; ``torch.rand(B)`` otherwise.
            micro_batch: compute the step in chunks of this many samples per branch: the same
                gradients (up to rounding) with peak memory bounded by the chunk size.
            check_inputs: refuse NaN/Inf in ``real``/``fake`` and ε outside [0, 1] (one device
                sync each), as :func:`fastgp.gradient_penalty` does; skipped while
                ``torch.compile`` traces the step.

        Every ``.grad`` set has its parameter's shape, strides, dtype and device, so any
        optimizer (fused Adam included) reads it as it would read autograd's; a parameter with
        ``requires_grad=False`` gets ``.grad = None``.

        A dropout in training mode draws one mask per forward pass, over the stacked rows of
        that pass, and the adjoint, tangent and backward after it share that mask
        (:mod:`fastgp.engine.dropout`): GP/LP run ``[real; fake]`` (on the CPU ``real``,
        then ``fake``), then ``x̂``; R1/R2 run ``[real; fake]`` once (each micro-batch its own
        forwards).
        """
        if self.conditions:
            raise ValueError("FusedCritic.step runs critics without conditional inputs; the "
                             "penalty of a conditional critic is fastgp.gradient_penalty(critic, "
                             "real, fake, cond=...)")
        if not isinstance(penalty, str) or penalty not in PENALTIES:
            raise ValueError(f"unknown penalty {penalty!r}: expected one of {PENALTIES}")
        weight_name = "gamma" if penalty in ("r1", "r2") else "weight"
        weight, center, _ = penalty_scalars(weight, center, weight_name=weight_name)
        micro_batch = integer("micro_batch", micro_batch, allow_none=True)
        # Value checks read the tensors (a device sync, a graph break under torch.compile):
        # eager calls only.
        check_inputs = flag("check_inputs", check_inputs) and not torch.compiler.is_compiling()
        self._check_inputs(real, fake)
        batch = real.shape[0]
        if penalty in ("gp", "lp") and eps is not None:
            check_eps(eps, batch, real.device, check_values=check_inputs)
        if check_inputs:
            check_finite("real", real)
            check_finite("fake", fake)
        self._refresh()
        chunk = batch if micro_batch is None else micro_batch
        if penalty != "none":
            due, self._phase = self._phase == 0, (self._phase + 1) % self.penalty_every
            if not due:
                penalty = "none"
        if penalty in ("gp", "lp"):
            if eps is None:
                eps = torch.rand(batch, device=real.device, dtype=real.dtype)
            else:
                eps = eps.to(real.dtype)
        ops = kernels_for(self.backend, real.device)
        grads = self._gradient_slots()
        weight = float(weight) * self.penalty_every
        results = []
        normalized = self.rule.positions.normalized
        with torch.no_grad(), reading_normalized_weights(normalized):
            for start in range(0, batch, chunk):
                rows = slice(start, min(start + chunk, batch))
                results.append(self._chunk(
                    real[rows], fake[rows], None if eps is None else eps[rows], penalty, weight,
                    float(center), batch, ops, grads))
            pull_back(normalized, self._read_parameters, grads, self.rule.positions)
        for parameter, grad in zip(self._read_parameters, grads[:len(self._read_parameters)], strict=True):
            parameter.grad = _in_layout_of(parameter, grad) if parameter.requires_grad else None
        wasserstein = sum((r[0] for r in results[1:]), results[0][0])
        total_penalty = sum((r[1] for r in results[1:]), results[0][1])
        norms = None if results[0][2] is None else torch.cat([r[2] for r in results])
        return CriticStep(total_penalty - wasserstein, wasserstein, total_penalty, norms)

    def penalty_gradients(
        self, x: torch.Tensor, penalty: str, weight: float, center: float = 1.0,
        conditions: tuple[torch.Tensor, ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """The penalty alone at the points ``x`` (x̂ for GP/LP, the samples for R1/R2) and its
        parameter gradients, without touching any ``.grad``: ``(P, norms, grads)`` with
        ``grads[i]`` the gradient for the ``i``-th of :meth:`parameters` in its layout (None
        where the
        parameter is frozen or unused). ``P = λ·mean φ(‖∇C(x)‖)`` (``γ/2·mean‖∇C‖²`` for R1/R2).

        This is what :func:`fastgp.gradient_penalty` adds to the user's own W-loss: forward,
        adjoint and tangent over the rows of ``x`` only, plus — for critics with curvature — a
        backward over them that carries the curvature terms. ``conditions`` are the critic's
        inputs after ``x`` (one row per row of ``x``), constants of the penalty. A dropout in
        training mode draws its mask once, over the rows of ``x``, as ``critic(x)`` would.
        """
        self._refresh()
        ops = kernels_for(self.backend, x.device)
        grads = self._gradient_slots()
        kernels = {"leaky": ops.bias_leaky_relu, "mask_product": ops.leaky_relu_mask_backward,
                   "grads": grads}
        rows = x.shape[0]
        normalized = self.rule.positions.normalized
        with torch.no_grad(), reading_normalized_weights(normalized):
            x = x.contiguous(memory_format=self._memory_format(x))
            curvature = self.rule.curvature
            ctx = StepContext(None, None, slice(0, rows) if curvature else None,
                              release_after_tangent=not curvature,
                              conditions=tuple(c.detach() for c in conditions), **kernels)
            scores, saved = self.rule.forward(x, ctx)
            self._check_scores(scores, rows)
            value, norms = self._penalize(saved, scores, ctx, penalty, weight, center, rows,
                                          ops)
            if curvature:  # the h̄ terms reach the parameters below through a backward
                self.rule.backward(saved, torch.zeros_like(scores), ctx, need_input=False)
            self.rule.factor_gradients(ctx)
            pull_back(normalized, self._read_parameters, grads, self.rule.positions)
        return value, norms, [None if grad is None or not parameter.requires_grad
                              else _in_layout_of(parameter, grad) for parameter, grad
                              in zip(self._read_parameters, grads[:len(self._read_parameters)], strict=True)]

    def _gradient_slots(self) -> list[torch.Tensor | None]:
        """One slot per parameter, then one per spectrally normalized weight of the step."""
        return [None] * (len(self._read_parameters) + len(self.rule.positions.normalized))

    def _check_inputs(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        check_batched_float("real", real)
        check_batched_float("fake", fake)
        check_same_layout("real", real, "fake", fake)
        if self._read_parameters:
            reference = self._read_parameters[0]
            if real.dtype != reference.dtype or real.device != reference.device:
                raise ValueError(
                    f"real and fake must have the critic's dtype and device ({reference.dtype} "
                    f"on {reference.device}), got {real.dtype} on {real.device}")

    def _memory_format(self, x: torch.Tensor) -> torch.memory_format:
        channels_last = self.channels_last if self.channels_last is not None else True
        return torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format

    def _stack(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """One batch of all rows, written once, in the step's memory format."""
        first = parts[0]
        if torch.compiler.is_compiling():
            # Dynamo refuses a channels-last out= tensor; Inductor fuses the copy anyway.
            return torch.cat(parts).contiguous(memory_format=self._memory_format(first))
        stacked = torch.empty((sum(p.shape[0] for p in parts), *first.shape[1:]), dtype=first.dtype,
                              device=first.device, memory_format=self._memory_format(first))
        return torch.cat(parts, out=stacked)

    def _chunk(self, real, fake, eps, penalty, weight, center, batch, ops: Kernels, grads):
        """Accumulate one chunk's gradients into ``grads``; return ``(W, P, norms)`` of the chunk.

        GP/LP run independent parts: the W-loss rows (forward and backward over ``[real;
        fake]`` stacked on CUDA, over the real and then the fake rows on the CPU), then the
        penalty rows (forward over x̂, adjoint, penalty, tangent, and — for critics with
        curvature — a backward over the x̂ rows that carries the curvature terms). Each part
        works on fewer rows than one stacked batch of all three would: a smaller working set
        (docs/engine.md, row planning, has the measurements); piecewise-linear critics free each
        layer's saved tensors as their last pass goes, and the parameter gradients are the
        only thing a part leaves to the next. R1/R2 take the penalty at the W-loss rows
        themselves: one stacked ``[real; fake]`` batch runs through all passes.
        """
        m = real.shape[0]
        kernels = {"leaky": ops.bias_leaky_relu, "mask_product": ops.leaky_relu_mask_backward,
                   "grads": grads}
        if penalty in ("gp", "lp"):
            # The stacked batch is written first so that x̂ is mixed from it in its memory format.
            x = self._stack([real, fake])
            x_hat = ops.interpolate(x[:m], x[m:], eps)
            if x.device.type == "cpu":
                # Two passes of B rows: a stacked pass's activations outgrow the CPU's
                # last-level cache on large critics (docs/engine.md, row planning).
                wasserstein = sum(self._loss_pass(part, StepContext(None, None, None, **kernels),
                                                  batch, sign)
                                  for part, sign in ((x[:m], -1.0), (x[m:], 1.0)))
            else:
                wasserstein = self._loss_pass(x, StepContext(None, None, None, **kernels), batch)
            del x
            curvature = self.rule.curvature
            ctx = StepContext(None, None, slice(0, m) if curvature else None,
                              release_after_tangent=not curvature, **kernels)
            scores, saved = self.rule.forward(x_hat, ctx)
            self._mark(PASSES[0])
            self._check_scores(scores, m)
            chunk_penalty, norms = self._penalize(saved, scores, ctx, penalty, weight, center,
                                                  batch, ops)
            if curvature:  # the h̄ terms reach the parameters below through a backward
                self.rule.backward(saved, torch.zeros_like(scores), ctx, need_input=False)
                self._mark(PASSES[4])
            self.rule.factor_gradients(ctx)
            return wasserstein, chunk_penalty, norms
        penalty_rows = {"r1": slice(0, m), "r2": slice(m, 2 * m)}.get(penalty)
        visit_penalty_rows = penalty_rows is not None and self.rule.curvature
        ctx = StepContext(penalty_rows, None, penalty_rows if visit_penalty_rows else None,
                          **kernels)
        x = self._stack([real, fake])
        scores, saved = self.rule.forward(x, ctx)
        self._mark(PASSES[0])
        self._check_scores(scores, x.shape[0])
        chunk_penalty, norms = scores.new_zeros(()), None
        if penalty_rows is not None:
            chunk_penalty, norms = self._penalize(saved, scores, ctx, penalty, weight, center,
                                                  batch, ops)
        return self._backward(saved, scores, ctx, batch), chunk_penalty, norms

    def _loss_pass(self, x, ctx, batch, sign=None):
        """Forward over ``[real; fake]`` (``sign`` None), or over the real (−1) or fake (+1)
        rows alone, and the backward of its W-loss; returns the chunk's share of W."""
        scores, saved = self.rule.forward(x, ctx)
        self._mark(PASSES[0])
        self._check_scores(scores, x.shape[0])
        return self._backward(saved, scores, ctx, batch, sign)

    def _backward(self, saved, scores, ctx, batch, sign=None):
        """The last pass over ``[real; fake]`` (or one of them, by ``sign``): the W-loss
        backward (and the curvature terms of R1/R2); returns the chunk's share of W."""
        # ∂loss/∂score: −1/B on the real rows, +1/B on the fake rows; W = −⟨seed, scores⟩.
        if sign is None:
            m = scores.shape[0] // 2
            seed = scores.new_full((2 * m,), 1.0 / batch)
            seed[:m] = -1.0 / batch
        else:
            seed = scores.new_full((scores.shape[0],), sign / batch)
        wasserstein = -torch.dot(scores.reshape(-1), seed)
        self.rule.backward(saved, seed.view(-1, *scores.shape[1:]), ctx, need_input=False)
        self.rule.factor_gradients(ctx)
        self._mark(PASSES[4])
        return wasserstein

    def _mark(self, phase: str) -> None:
        if self.phase_hook is not None:
            self.phase_hook(phase)

    @staticmethod
    def _check_scores(scores: torch.Tensor, rows: int) -> None:
        check_one_score_per_sample(scores, rows)

    def _penalize(self, saved, scores, ctx, penalty, weight, center, batch, ops: Kernels):
        """Adjoint, penalty and tangent passes over the penalty rows; returns ``(P, norms)``."""
        seed = torch.ones_like(ctx.penalty_part(scores))
        m = seed.shape[0]
        grad = self.rule.adjoint(saved, seed, ctx)
        self._mark(PASSES[1])
        # norm_penalty averages over the chunk; weight m/B makes the chunks sum to the mean.
        if penalty in ("r1", "r2"):
            chunk_weight, center, one_sided = weight / 2 * m / batch, 0.0, False
        else:
            chunk_weight, one_sided = weight * m / batch, penalty == "lp"
        chunk_penalty, norms = ops.norm_penalty(grad, chunk_weight, center, one_sided)
        # ∂P/∂g = s_i · g_i with p̄ = 1 and no norm gradient: what the tangent pass starts from.
        tangent = ops.norm_penalty_backward(grad, norms, norms.new_ones(()), None, chunk_weight,
                                            center, one_sided)
        self._mark(PASSES[2])
        self.rule.tangent(saved, tangent, ctx)
        self._mark(PASSES[3])
        return chunk_penalty, norms
