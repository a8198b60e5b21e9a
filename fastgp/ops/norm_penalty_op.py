"""``fastgp::norm_penalty``: per-sample gradient norms and the penalty on them.

Forward, for the input gradient ``g`` of a batch of ``B`` samples (any rank ≥ 2)::

    n_i     = ‖g_i‖₂ = sqrt(Σ_j g_ij²)            (over every non-batch dimension)
    d_i     = n_i − c                           two-sided (WGAN-GP, c = 1; zero-centred, c = 0)
    d_i     = max(0, n_i − c)                   one-sided (WGAN-LP)
    penalty = λ · (1/B) · Σ_i d_i²

Backward, with upstream gradients ``p̄`` (of the penalty) and ``n̄_i`` (of the norms)::

    ∂/∂g_i = s_i · g_i,   s_i = (2λ/B · d_i · p̄ + n̄_i) / n_i,   and s_i = 0 where n_i = 0

``s_i = 0`` at a zero norm is the subgradient we define there: a hand-written
``sqrt(sum(g²))`` would give NaN. Norms and penalty are accumulated and returned in fp32 for
16-bit inputs and in the input dtype otherwise. The backward uses differentiable torch ops,
so the op supports double backward (``gradgradcheck``) as well.
"""

# No `from __future__ import annotations` here: custom_op reads these hints to build the schema.
import torch

from fastgp.ops._checks import accumulation_dtype, batch_view_shape


def _sample_dims(grad: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, grad.dim()))


def _deviation(norms: torch.Tensor, center: float, one_sided: bool) -> torch.Tensor:
    deviation = norms - center
    return deviation.clamp_min(0) if one_sided else deviation


@torch.library.custom_op("fastgp::norm_penalty", mutates_args=())
def _norm_penalty(
    grad: torch.Tensor, weight: float, center: float, one_sided: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    # vector_norm reduces over the given dims in any memory format (no copy for channels_last)
    # and casts to the accumulation dtype as it reads.
    norms = torch.linalg.vector_norm(
        grad, ord=2, dim=_sample_dims(grad), dtype=accumulation_dtype(grad.dtype)
    )
    deviation = _deviation(norms, center, one_sided)
    penalty = weight * (deviation * deviation).mean()
    return penalty, norms


@_norm_penalty.register_fake
def _(grad: torch.Tensor, weight: float, center: float, one_sided: bool):
    acc = accumulation_dtype(grad.dtype)
    return grad.new_empty((), dtype=acc), grad.new_empty((grad.shape[0],), dtype=acc)


def _setup_context(ctx, inputs, output) -> None:
    grad, weight, center, one_sided = inputs
    _, norms = output
    ctx.save_for_backward(grad, norms)
    ctx.weight, ctx.center, ctx.one_sided = weight, center, one_sided


def _backward(ctx, grad_penalty: torch.Tensor | None, grad_norms: torch.Tensor | None):
    grad, norms = ctx.saved_tensors
    batch = norms.shape[0]
    coefficient = torch.zeros_like(norms)
    if grad_penalty is not None:
        deviation = _deviation(norms, ctx.center, ctx.one_sided)
        coefficient = coefficient + (2.0 * ctx.weight / batch) * deviation * grad_penalty
    if grad_norms is not None:
        coefficient = coefficient + grad_norms
    nonzero = norms > 0
    # Divide by a safe denominator, then select: a `where` after dividing by zero would
    # still send NaN into the double backward.
    safe_norms = torch.where(nonzero, norms, torch.ones_like(norms))
    scale = torch.where(nonzero, coefficient / safe_norms, torch.zeros_like(norms))
    scaled = grad.to(norms.dtype) * scale.view(batch_view_shape(grad))
    return scaled.to(grad.dtype), None, None, None


_norm_penalty.register_autograd(_backward, setup_context=_setup_context)
