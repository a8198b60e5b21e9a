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
16-bit inputs and in the input dtype otherwise. The backward runs the backend's one-pass kernel;
under ``create_graph=True`` it runs as differentiable torch ops instead, so the op supports
double backward (``gradgradcheck``) on every backend. The backward's output takes the layout of
:mod:`fastgp.ops._layout` on every backend, and so do the fake kernels.
"""

# No `from __future__ import annotations` here: custom_op reads these hints to build the schema.
import torch

from fastgp.ops._checks import accumulation_dtype, batch_view_shape, check_same_device
from fastgp.ops._layout import output_like
from fastgp.ops._registry import op_for


def _sample_dims(grad: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, grad.dim()))


def _deviation(norms: torch.Tensor, center: float, one_sided: bool) -> torch.Tensor:
    deviation = norms - center
    return deviation.clamp_min(0) if one_sided else deviation


def _composite(grad: torch.Tensor, weight: float, center: float, one_sided: bool):
    # vector_norm reduces over the given dims in any memory format (no copy for channels_last)
    # and casts to the accumulation dtype as it reads.
    norms = torch.linalg.vector_norm(
        grad, ord=2, dim=_sample_dims(grad), dtype=accumulation_dtype(grad.dtype)
    )
    deviation = _deviation(norms, center, one_sided)
    return weight * (deviation * deviation).mean(), norms


@torch.library.custom_op("fastgp::norm_penalty", mutates_args=())
def _norm_penalty(
    grad: torch.Tensor, weight: float, center: float, one_sided: bool, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if backend == "triton":
        from fastgp.ops.triton import launchers

        return launchers.norm_penalty(grad, weight, center, one_sided)
    if backend == "native":
        return torch.ops.fastgp_native.norm_penalty(grad, weight, center, one_sided)
    return _composite(grad, weight, center, one_sided)


@_norm_penalty.register_fake
def _(grad, weight, center, one_sided, backend):
    acc = accumulation_dtype(grad.dtype)
    return grad.new_empty((), dtype=acc), grad.new_empty((grad.shape[0],), dtype=acc)


def save_norm_penalty(ctx, grad, weight, center, one_sided, backend, norms) -> None:
    ctx.weight, ctx.center, ctx.one_sided, ctx.backend = weight, center, one_sided, backend
    ctx.save_for_backward(grad, norms)


def composite_backward(grad, norms, grad_penalty, grad_norms, weight: float, center: float,
                       one_sided: bool) -> torch.Tensor:
    """``s_i · g_i`` as differentiable torch ops (the formula of the module docstring)."""
    batch = norms.shape[0]
    coefficient = torch.zeros_like(norms)
    if grad_penalty is not None:
        deviation = _deviation(norms, center, one_sided)
        coefficient = coefficient + (2.0 * weight / batch) * deviation * grad_penalty
    if grad_norms is not None:
        coefficient = coefficient + grad_norms
    nonzero = norms > 0
    # Divide by a safe denominator, then select: a `where` after dividing by zero would
    # still send NaN into the double backward.
    safe_norms = torch.where(nonzero, norms, torch.ones_like(norms))
    scale = torch.where(nonzero, coefficient / safe_norms, torch.zeros_like(norms))
    return (grad.to(norms.dtype) * scale.view(batch_view_shape(grad))).to(grad.dtype)


@torch.library.custom_op("fastgp::norm_penalty_backward", mutates_args=())
def _norm_penalty_backward(
    grad: torch.Tensor, norms: torch.Tensor, grad_penalty: torch.Tensor | None,
    grad_norms: torch.Tensor | None, weight: float, center: float, one_sided: bool, backend: str,
) -> torch.Tensor:
    """``s_i · g_i`` in one pass over ``g`` (first-order backward of ``norm_penalty``)."""
    _check_backward_devices(grad, norms, grad_penalty, grad_norms)
    if backend == "triton":
        from fastgp.ops.triton import launchers

        return launchers.norm_penalty_backward(grad, norms, grad_penalty, grad_norms, weight,
                                               center, one_sided)
    if backend == "native":
        return torch.ops.fastgp_native.norm_penalty_backward(grad, norms, grad_penalty,
                                                             grad_norms, weight, center, one_sided)
    return output_like(grad).copy_(
        composite_backward(grad, norms, grad_penalty, grad_norms, weight, center, one_sided))


def _check_backward_devices(grad, norms, grad_penalty, grad_norms) -> None:
    check_same_device("fastgp::norm_penalty_backward", grad=grad, norms=norms,
                      grad_penalty=grad_penalty, grad_norms=grad_norms)


@_norm_penalty_backward.register_fake
def _(grad, norms, grad_penalty, grad_norms, weight, center, one_sided, backend):
    _check_backward_devices(grad, norms, grad_penalty, grad_norms)
    return output_like(grad)


def norm_penalty_backward(ctx, grad_penalty: torch.Tensor | None,
                          grad_norms: torch.Tensor | None) -> torch.Tensor:
    """Gradient of ``grad``: the backend's one-pass kernel, or differentiable torch ops when the
    backward itself is being differentiated (``create_graph=True``) or the backend is torch."""
    grad, norms = ctx.saved_tensors
    if torch.is_grad_enabled() or ctx.backend == "torch":
        return composite_backward(grad, norms, grad_penalty, grad_norms, ctx.weight, ctx.center,
                                  ctx.one_sided)
    return op_for("norm_penalty_backward", ctx.backend)(
        grad, norms, grad_penalty, grad_norms, ctx.weight, ctx.center, ctx.one_sided)


def penalty_input_gradient(grad: torch.Tensor, norms: torch.Tensor, weight: float, center: float,
                           one_sided: bool, backend: str) -> torch.Tensor:
    """``∂penalty/∂grad = s_i · g_i`` with ``p̄ = 1`` and no norm gradient, in one pass on the
    backend's kernel (composite ops for ``torch``): what the engine's tangent pass starts from."""
    upstream = norms.new_ones(())
    if backend == "torch":
        return composite_backward(grad, norms, upstream, None, weight, center, one_sided)
    return op_for("norm_penalty_backward", backend)(grad, norms, upstream, None, weight, center,
                                                    one_sided)


_norm_penalty.register_autograd(
    lambda ctx, *grads: (norm_penalty_backward(ctx, *grads), None, None, None, None),
    setup_context=lambda ctx, inputs, output: save_norm_penalty(ctx, *inputs, output[1]),
)
