"""The canonical eager WGAN-GP penalty and its relatives, written plainly.

This module is the oracle for every test (run in float64) and the baseline for every benchmark.
It is deliberately the code people already have: interpolate, take the input gradient with
``autograd.grad(create_graph=True)``, flatten, ``norm``, subtract the centre, square, mean.
Nothing here is fused or checked; inputs are trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Critic = Callable[..., torch.Tensor]


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``x̂ = ε·real + (1−ε)·fake`` with one ε per sample."""
    alpha = eps.view(-1, *([1] * (real.dim() - 1)))
    return alpha * real + (1 - alpha) * fake


def input_gradient(x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``∇ₓ Σᵢ C(xᵢ)`` with ``create_graph=True``, so that a penalty on it can be backpropagated."""
    (grad,) = torch.autograd.grad(
        outputs=scores, inputs=x, grad_outputs=torch.ones_like(scores), create_graph=True
    )
    return grad


def norm_penalty(
    grad: torch.Tensor, weight: float = 10.0, center: float = 1.0, one_sided: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``λ · mean_i((‖gᵢ‖₂ − c)²)`` (or the positive part of ``‖gᵢ‖₂ − c``). Returns ``(penalty, norms)``."""
    norms = grad.reshape(grad.shape[0], -1).norm(2, dim=1)
    deviation = norms - center
    if one_sided:
        deviation = deviation.clamp(min=0)
    return weight * (deviation**2).mean(), norms


def _input_gradient(critic: Critic, x: torch.Tensor, cond: Sequence[torch.Tensor]) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    return input_gradient(x, critic(x, *cond))


def gradient_penalty(
    critic: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    eps: torch.Tensor,
    weight: float = 10.0,
    center: float = 1.0,
    one_sided: bool = False,
    cond: Sequence[torch.Tensor] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """``λ · mean_i(d_i²)``, ``d_i = ‖∇C(x̂_i)‖₂ − c`` (or its positive part), ``x̂ = ε·real + (1−ε)·fake``.

    Returns ``(penalty, norms)``.
    """
    grad = _input_gradient(critic, interpolate(real, fake, eps), cond)
    return norm_penalty(grad, weight, center, one_sided)


def r1_penalty(
    critic: Critic, x: torch.Tensor, gamma: float = 10.0, cond: Sequence[torch.Tensor] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """R1 (on reals) or R2 (on fakes): ``γ/2 · mean_i ‖∇C(x_i)‖₂²``. Returns ``(penalty, norms)``."""
    grad = _input_gradient(critic, x, cond)
    squared = grad.reshape(grad.shape[0], -1).pow(2).sum(dim=1)
    return gamma / 2 * squared.mean(), squared.sqrt()


def dragan_penalty(
    critic: Critic,
    real: torch.Tensor,
    noise: torch.Tensor,
    eps: torch.Tensor,
    weight: float = 10.0,
    center: float = 1.0,
    scale: float = 0.5,
    cond: Sequence[torch.Tensor] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """DRAGAN: the two-sided penalty around perturbed reals.

    ``x_p = real + scale · std(real) · noise`` (``noise`` ~ U[0,1) in the DRAGAN code, std over the
    whole batch), then the penalty of :func:`gradient_penalty` on ``ε·real + (1−ε)·x_p``.
    """
    perturbed = real + scale * real.std() * noise
    return gradient_penalty(critic, real, perturbed, eps, weight, center, False, cond)


def critic_loss(
    critic: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    eps: torch.Tensor,
    weight: float = 10.0,
    center: float = 1.0,
    one_sided: bool = False,
    cond: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """The WGAN-GP critic loss ``E[C(fake)] − E[C(real)] + penalty`` of one critic step."""
    penalty, _ = gradient_penalty(critic, real, fake, eps, weight, center, one_sided, cond)
    return critic(fake, *cond).mean() - critic(real, *cond).mean() + penalty
