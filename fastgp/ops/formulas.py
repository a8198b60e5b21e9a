"""The math of every fastgp op in PyTorch: composite, fake kernel and autograd formulas.

Each op has three implementations (``torch``: the composites below; ``native``: the C++/CUDA
kernels of ``fastgp._C``; ``triton``: the kernels of :mod:`fastgp.ops.triton`), and each
implementation is one registered op (``fastgp_torch::``, ``fastgp_native::``, ``fastgp_triton::``).
This module holds what they share: the composite that defines the op (the oracle), the fake
kernel ``torch.compile`` traces, and the autograd formulas. A formula that needs another op (the
backward kernel, or the op itself in a double backward) receives the implementation's
:class:`Kernels`, so each implementation differentiates through its own kernels and this module
imports nothing above the ops' leaves. The contract every op keeps is written down in
``fastgp/ops/README.md``.

Formulas, for a batch of ``B`` samples (``i`` the sample, ``j`` an element of it):

``interpolate(real, fake, ε)``::

    x̂_i = ε_i · real_i + (1 − ε_i) · fake_i
    ∂real_i = ε_i · g_i,   ∂fake_i = (1 − ε_i) · g_i,   ∂ε_i = Σ_j g_ij · (real_ij − fake_ij)

``interpolate_backward(g, ε)`` writes both input gradients from one read of ``g``; it is linear
in ``g``, so its own backward is ``interpolate`` again (the op may sit under ``create_graph``).

``norm_penalty(g, λ, c, one_sided)``, over every non-batch dimension::

    n_i = ‖g_i‖₂,   d_i = n_i − c  (or max(0, n_i − c) one-sided),   penalty = λ/B · Σ_i d_i²

``norm_penalty_backward``, with upstream gradients ``p̄`` (penalty) and ``n̄_i`` (norms)::

    ∂g_i = s_i · g_i,   s_i = (2λ/B · d_i · p̄ + n̄_i) / n_i,   s_i = 0 where n_i = 0

(the subgradient defined at a zero norm: a hand-written ``sqrt(sum(g²))`` would give NaN). Norms
and penalty are fp32 for 16-bit inputs and in the input dtype otherwise.

``bias_leaky_relu(x, b, α, channel_dim)``, ``b`` broadcast along ``channel_dim``::

    y_j = x_j + b_c,   out_j = y_j if y_j > 0 else α · y_j,   mask_j = (y_j > 0)  (torch.bool)
    ∂x_j = g_j if mask_j else α · g_j   (``leaky_relu_mask_backward``),   ∂b_c = Σ_{j ∈ c} ∂x_j

LeakyReLU is piecewise linear: the mask product is linear in ``g`` and self-adjoint, so the
backward's own backward is the same kernel (StyleGAN2-ADA's bias_act pattern).

Every output takes the layout of :mod:`fastgp.ops._layout` (its input's strides when contiguous
or channels_last, contiguous otherwise) on every implementation and in every fake kernel.
"""

# No `from __future__ import annotations` here: custom_op reads the composites' hints as schemas.
import functools
from collections.abc import Callable
from typing import NamedTuple

import torch

from fastgp.ops._checks import accumulation_dtype, batch_view_shape, check_same_device
from fastgp.ops._layout import output_like


class Kernels(NamedTuple):
    """One implementation of every op: the callables of its registered ops, same signatures."""

    interpolate: Callable
    interpolate_backward: Callable
    norm_penalty: Callable
    norm_penalty_backward: Callable
    bias_leaky_relu: Callable
    leaky_relu_mask_backward: Callable


# --- interpolate ------------------------------------------------------------------------------

def _interpolate_devices(real, fake, eps) -> None:
    check_same_device("interpolate", real=real, fake=fake, eps=eps)


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    _interpolate_devices(real, fake, eps)
    eps_b = eps.to(real.dtype).view(batch_view_shape(real))
    # The canonical two products and a sum, so the result rounds exactly like the usual
    # `eps * real + (1 - eps) * fake` line, written in the layout every implementation returns.
    return torch.add(eps_b * real, (1 - eps_b) * fake, out=output_like(real))


def interpolate_fake(real, fake, eps):
    _interpolate_devices(real, fake, eps)
    return output_like(real)


def interpolate_save(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def interpolate_grads(kernels: Kernels, ctx, grad_out):
    """Gradients of ``(real, fake, eps)``: both sample gradients from one kernel when both are
    needed; one alone is a plain product (one read and one write is already minimal)."""
    real, fake, eps = ctx.saved_tensors
    need_real, need_fake, need_eps = ctx.needs_input_grad[:3]
    grad_real = grad_fake = grad_eps = None
    if need_real and need_fake:
        grad_real, grad_fake = kernels.interpolate_backward(grad_out, eps)
    elif need_real or need_fake:
        eps_b = eps.to(real.dtype).view(batch_view_shape(real))
        if need_real:
            grad_real = grad_out * eps_b
        else:
            grad_fake = grad_out * (1 - eps_b)
    if need_eps:
        per_element = grad_out * (real - fake)
        grad_eps = per_element.sum(dim=tuple(range(1, real.dim()))).to(eps.dtype)
    return grad_real, grad_fake, grad_eps


def _interpolate_backward_devices(grad, eps) -> None:
    check_same_device("interpolate_backward", grad=grad, eps=eps)


def interpolate_backward(grad: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _interpolate_backward_devices(grad, eps)
    eps_b = eps.to(grad.dtype).view(batch_view_shape(grad))
    return (torch.mul(grad, eps_b, out=output_like(grad)),
            torch.mul(grad, 1 - eps_b, out=output_like(grad)))


def interpolate_backward_fake(grad, eps):
    _interpolate_backward_devices(grad, eps)
    return output_like(grad), output_like(grad)


def interpolate_backward_save(ctx, inputs, output) -> None:
    grad, eps = inputs
    # g is needed only for the ε-derivative Σ_j g_ij (ū_ij − v̄_ij)
    ctx.save_for_backward(grad if ctx.needs_input_grad[1] else None, eps)


def interpolate_backward_grads(kernels: Kernels, ctx, grad_grad_real, grad_grad_fake):
    """Backward of ``interpolate_backward``: ``interpolate(ū, v̄, ε)`` and ``Σ_j g_ij (ū_ij − v̄_ij)``."""
    grad, eps = ctx.saved_tensors
    if grad_grad_real is None:
        grad_grad_real = torch.zeros_like(grad_grad_fake)
    if grad_grad_fake is None:
        grad_grad_fake = torch.zeros_like(grad_grad_real)
    grad_grad = kernels.interpolate(grad_grad_real, grad_grad_fake, eps)
    grad_eps = None
    if ctx.needs_input_grad[1]:
        per_element = grad * (grad_grad_real - grad_grad_fake)
        grad_eps = per_element.sum(dim=tuple(range(1, grad.dim()))).to(eps.dtype)
    return grad_grad, grad_eps


# --- norm_penalty -----------------------------------------------------------------------------

def _deviation(norms: torch.Tensor, center: float, one_sided: bool) -> torch.Tensor:
    deviation = norms - center
    return deviation.clamp_min(0) if one_sided else deviation


def norm_penalty(grad: torch.Tensor, weight: float, center: float,
                 one_sided: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # vector_norm reduces over the given dims in any memory format (no copy for channels_last)
    # and casts to the accumulation dtype as it reads.
    norms = torch.linalg.vector_norm(grad, ord=2, dim=tuple(range(1, grad.dim())),
                                     dtype=accumulation_dtype(grad.dtype))
    deviation = _deviation(norms, center, one_sided)
    return weight * (deviation * deviation).mean(), norms


def norm_penalty_fake(grad, weight, center, one_sided):
    acc = accumulation_dtype(grad.dtype)
    return grad.new_empty((), dtype=acc), grad.new_empty((grad.shape[0],), dtype=acc)


def norm_penalty_save(ctx, inputs, output) -> None:
    grad, ctx.weight, ctx.center, ctx.one_sided = inputs
    ctx.save_for_backward(grad, output[1])


def differentiable_norm_penalty_backward(grad, norms, grad_penalty, grad_norms, weight: float,
                                         center: float, one_sided: bool) -> torch.Tensor:
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


def norm_penalty_grads(kernels: Kernels, ctx, grad_penalty, grad_norms):
    """Gradient of ``grad``: the implementation's one-pass kernel, or differentiable torch ops
    when the backward itself is being differentiated (``create_graph=True``)."""
    grad, norms = ctx.saved_tensors
    args = (grad, norms, grad_penalty, grad_norms, ctx.weight, ctx.center, ctx.one_sided)
    if torch.is_grad_enabled():
        return differentiable_norm_penalty_backward(*args), None, None, None
    return kernels.norm_penalty_backward(*args), None, None, None


def _norm_penalty_backward_devices(grad, norms, grad_penalty, grad_norms) -> None:
    check_same_device("norm_penalty_backward", grad=grad, norms=norms,
                      grad_penalty=grad_penalty, grad_norms=grad_norms)


def norm_penalty_backward(
    grad: torch.Tensor, norms: torch.Tensor, grad_penalty: torch.Tensor | None,
    grad_norms: torch.Tensor | None, weight: float, center: float, one_sided: bool,
) -> torch.Tensor:
    _norm_penalty_backward_devices(grad, norms, grad_penalty, grad_norms)
    return output_like(grad).copy_(differentiable_norm_penalty_backward(
        grad, norms, grad_penalty, grad_norms, weight, center, one_sided))


def norm_penalty_backward_fake(grad, norms, grad_penalty, grad_norms, weight, center, one_sided):
    _norm_penalty_backward_devices(grad, norms, grad_penalty, grad_norms)
    return output_like(grad)


# --- bias_leaky_relu --------------------------------------------------------------------------

def _bias_leaky_relu_devices(x, bias) -> None:
    check_same_device("bias_leaky_relu", x=x, bias=bias)


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float,
                    channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    _bias_leaky_relu_devices(x, bias)
    if bias is None:
        y = x
    else:
        shape = [1] * x.dim()
        shape[channel_dim] = -1
        y = x + bias.to(x.dtype).view(shape)
    mask = torch.gt(y, 0, out=output_like(x, torch.bool))
    return torch.where(mask, y, y * negative_slope, out=output_like(x)), mask


def bias_leaky_relu_fake(x, bias, negative_slope, channel_dim):
    _bias_leaky_relu_devices(x, bias)
    return output_like(x), output_like(x, torch.bool)


def bias_leaky_relu_save(ctx, inputs, output) -> None:
    _, bias, ctx.negative_slope, ctx.channel_dim = inputs
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.save_for_backward(output[1])


def bias_leaky_relu_grads(kernels: Kernels, ctx, grad_out, _grad_mask):
    """Gradients of ``(x, bias)`` from the saved mask (module docstring)."""
    (mask,) = ctx.saved_tensors
    grad_x = kernels.leaky_relu_mask_backward(grad_out, mask, ctx.negative_slope)
    grad_bias = None
    if ctx.needs_input_grad[1]:
        dims = [d for d in range(grad_x.dim()) if d != ctx.channel_dim]
        grad_bias = grad_x.sum(dim=dims).to(ctx.bias_dtype)
    return grad_x, grad_bias, None, None


def _mask_backward_devices(grad, mask) -> None:
    check_same_device("leaky_relu_mask_backward", grad=grad, mask=mask)


def leaky_relu_mask_backward(grad: torch.Tensor, mask: torch.Tensor,
                             negative_slope: float) -> torch.Tensor:
    _mask_backward_devices(grad, mask)
    return torch.where(mask, grad, grad * negative_slope, out=output_like(grad))


def leaky_relu_mask_backward_fake(grad, mask, negative_slope):
    _mask_backward_devices(grad, mask)
    return output_like(grad)


def leaky_relu_mask_backward_save(ctx, inputs, output) -> None:
    _, mask, ctx.negative_slope = inputs
    ctx.save_for_backward(mask)


def leaky_relu_mask_backward_grads(kernels: Kernels, ctx, grad_grad):
    """The mask product is linear in ``g`` and self-adjoint: its backward is itself."""
    (mask,) = ctx.saved_tensors
    return kernels.leaky_relu_mask_backward(grad_grad, mask, ctx.negative_slope), None, None


# --- the table the registrations read ---------------------------------------------------------

class OpFormulas(NamedTuple):
    """What every implementation of one op shares: ``composite`` (the ``torch`` implementation,
    whose annotations are the op's schema), ``fake``, and the autograd formula — ``save``
    (``setup_context``) and ``grads(kernels, ctx, *grad_outputs)`` — or None for an op that is
    only ever called where nothing differentiates it (``norm_penalty_backward``: under
    ``create_graph`` the backward runs :func:`differentiable_norm_penalty_backward` instead)."""

    composite: Callable
    fake: Callable
    save: Callable | None
    grads: Callable | None


FORMULAS: dict[str, OpFormulas] = {
    "interpolate": OpFormulas(interpolate, interpolate_fake, interpolate_save,
                              interpolate_grads),
    "interpolate_backward": OpFormulas(interpolate_backward, interpolate_backward_fake,
                                       interpolate_backward_save, interpolate_backward_grads),
    "norm_penalty": OpFormulas(norm_penalty, norm_penalty_fake, norm_penalty_save,
                               norm_penalty_grads),
    "norm_penalty_backward": OpFormulas(norm_penalty_backward, norm_penalty_backward_fake,
                                        None, None),
    "bias_leaky_relu": OpFormulas(bias_leaky_relu, bias_leaky_relu_fake, bias_leaky_relu_save,
                                  bias_leaky_relu_grads),
    "leaky_relu_mask_backward": OpFormulas(leaky_relu_mask_backward,
                                           leaky_relu_mask_backward_fake,
                                           leaky_relu_mask_backward_save,
                                           leaky_relu_mask_backward_grads),
}
assert sorted(FORMULAS) == sorted(Kernels._fields), "every op of Kernels has formulas, no other"


def register(namespace: str) -> Kernels:
    """Give the ops ``namespace::<name>`` (already defined: by ``custom_op``, ``triton_op`` or
    C++) their fake kernels and autograd formulas, and return their :class:`Kernels`.

    A ``triton_op`` comes with a fake kernel of its own (its launcher run on fake tensors); the
    shared one replaces it, so that every implementation has the same fake and tracing never
    evaluates a launch plan on symbolic sizes (minutes of guards under dynamic shapes)."""
    ops = getattr(torch.ops, namespace)
    kernels = Kernels(*(getattr(ops, name) for name in Kernels._fields))
    for name, formulas in FORMULAS.items():
        qualified = f"{namespace}::{name}"
        torch.library.register_fake(qualified, formulas.fake)
        if formulas.grads is not None:
            torch.library.register_autograd(
                qualified, functools.partial(formulas.grads, kernels),
                setup_context=formulas.save)
    return kernels
