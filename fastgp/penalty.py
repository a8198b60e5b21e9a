"""Tier 1: gradient penalties for any critic, as drop-in replacements.

``gradient_penalty(critic, real, fake)`` replaces the usual lines::

    eps = torch.rand(B, 1, ..., 1)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)[0]
    penalty = weight * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

and gives the same numbers (for the same ε) through the fastgp ops, with checked inputs, a
defined subgradient at zero norm, AMP handled and conditional critics supported. ``real`` and
``fake`` are treated as constants: the penalty regularizes the critic, it never sends gradient
into the generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fastgp import ops
from fastgp.ops._checks import accumulation_dtype
from fastgp.validation import (
    check_batched_float,
    check_eps,
    check_finite,
    check_grad_enabled,
    check_same_layout,
    flag,
    penalty_scalars,
    real_number,
)

Critic = Callable[..., torch.Tensor]
Condition = torch.Tensor | Sequence[torch.Tensor] | None


def gradient_penalty(
    critic: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    weight: float = 10.0,
    center: float = 1.0,
    one_sided: bool = False,
    eps: torch.Tensor | None = None,
    cond: Condition = None,
    return_norms: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    allow_batchnorm: bool = False,
    check_inputs: bool = True,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """WGAN-GP penalty ``λ · E[(‖∇C(x̂)‖₂ − c)²]`` at ``x̂ = ε·real + (1−ε)·fake``, ε ~ U[0,1] per sample.

    Args:
        critic: any ``nn.Module`` or callable mapping ``(x, *cond)`` to one score per sample,
            shape ``(B,)``, ``(B, 1)`` or ``(B, 1, ..., 1)``.
        real, fake: batches of the same shape ``(B, ...)`` (rank ≥ 2), dtype and device.
        weight: λ (10 in the WGAN-GP paper's image experiments, 0.1 for its toy sets).
        center: c; 1 for WGAN-GP, 0 for a zero-centred penalty.
        one_sided: penalize only norms above ``center``: ``λ · E[max(0, ‖∇C‖ − c)²]`` (WGAN-LP).
        eps: optional interpolation weights of shape ``(B,)``; drawn from U[0,1) with the global
            RNG otherwise (the same draw as ``torch.rand(B)`` on the samples' device).
        cond: a tensor or tuple of tensors (one row per sample) passed to the critic unchanged
            after ``x̂``; the gradient is taken with respect to ``x̂`` only.
        return_norms: also return the per-sample gradient norms ``(B,)`` (detached).
        scaler: an fp16 ``GradScaler``. The input gradient is taken of the *scaled* output and
            unscaled before the norm, as in PyTorch's AMP recipe, so small gradients do not
            underflow. Norms and penalty are computed in fp32 outside autocast.
        allow_batchnorm: BatchNorm mixes samples, so a per-sample penalty is not what the
            WGAN-GP paper defines (§4); critics with BatchNorm are refused unless this is True.
        check_inputs: check ``real``, ``fake`` and ``eps`` for NaN/Inf and ε ∉ [0, 1] (one device
            sync each). Shape, dtype and device checks are always made.
        backend: implementation of the interpolation and norm/penalty ops: ``auto``,
            ``triton``, ``native`` or ``torch``; None uses :func:`fastgp.get_backend`.

    Returns:
        The scalar penalty, differentiable with respect to the critic's parameters; with
        ``return_norms``, ``(penalty, norms)``.
    """
    check_grad_enabled("gradient_penalty")
    check_batched_float("real", real)
    check_batched_float("fake", fake)
    check_same_layout("real", real, "fake", fake)
    weight, center, one_sided = penalty_scalars(weight, center, one_sided)
    return_norms, check_inputs = flag("return_norms", return_norms), flag("check_inputs", check_inputs)
    batch = real.shape[0]
    conditions = _as_condition_tuple(cond, batch)
    _check_critic(critic, allow_batchnorm)
    if check_inputs:
        check_finite("real", real)
        check_finite("fake", fake)
    if eps is None:
        eps = torch.rand(batch, device=real.device, dtype=real.dtype)
    else:
        check_eps(eps, batch, real.device, check_values=check_inputs)

    x_hat = ops.interpolate(real.detach(), fake.detach(), eps.detach(), backend=backend)
    return _penalty_at(critic, x_hat, conditions, weight, center, one_sided, return_norms, scaler,
                       backend)


def r1_penalty(
    critic: Critic,
    x: torch.Tensor,
    gamma: float = 10.0,
    *,
    cond: Condition = None,
    return_norms: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    allow_batchnorm: bool = False,
    check_inputs: bool = True,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """R1/R2 penalty ``γ/2 · E[‖∇C(x)‖₂²]`` (Mescheder et al. 2018).

    Pass real samples for R1 and generated samples for R2. Arguments as in
    :func:`gradient_penalty`.
    """
    check_grad_enabled("r1_penalty")
    check_batched_float("x", x)
    gamma = real_number("gamma", gamma, minimum=0.0)
    return_norms, check_inputs = flag("return_norms", return_norms), flag("check_inputs", check_inputs)
    conditions = _as_condition_tuple(cond, x.shape[0])
    _check_critic(critic, allow_batchnorm)
    if check_inputs:
        check_finite("x", x)
    return _penalty_at(critic, x.detach(), conditions, gamma / 2, 0.0, False, return_norms, scaler,
                       backend)


def dragan_penalty(
    critic: Critic,
    real: torch.Tensor,
    *,
    weight: float = 10.0,
    center: float = 1.0,
    scale: float = 0.5,
    noise: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
    cond: Condition = None,
    return_norms: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    allow_batchnorm: bool = False,
    check_inputs: bool = True,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """DRAGAN penalty (Kodali et al. 2017): the gradient penalty around perturbed real samples.

    ``x_p = real + scale · std(real) · u`` with ``u`` ~ U[0,1) elementwise (``noise``) and the
    standard deviation over the whole batch, then :func:`gradient_penalty` on
    ``ε·real + (1−ε)·x_p``.
    """
    check_grad_enabled("dragan_penalty")
    check_batched_float("real", real)
    scale = real_number("scale", scale, minimum=0.0)
    if noise is None:
        noise = torch.rand_like(real)
    else:
        check_same_layout("real", real, "noise", noise)
    if flag("check_inputs", check_inputs):
        check_finite("real", real)
        check_finite("noise", noise)
    real = real.detach()
    perturbed = real + scale * real.std() * noise
    return gradient_penalty(
        critic, real, perturbed, weight=weight, center=center, eps=eps, cond=cond,
        return_norms=return_norms, scaler=scaler, allow_batchnorm=allow_batchnorm,
        check_inputs=check_inputs, backend=backend,
    )


def _penalty_at(
    critic: Critic,
    x: torch.Tensor,
    conditions: tuple[torch.Tensor, ...],
    weight: float,
    center: float,
    one_sided: bool,
    return_norms: bool,
    scaler: torch.amp.GradScaler | None,
    backend: str | None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Penalty on the norms of ``∇_x C(x, *conditions)``; ``x`` becomes a leaf that requires grad."""
    x = x.requires_grad_(True)
    scores = critic(x, *conditions)
    _check_scores(scores, x.shape[0])
    if scaler is not None:
        scores = scaler.scale(scores)
    (grad,) = torch.autograd.grad(
        scores.sum(), x, create_graph=True, allow_unused=True
    )
    if grad is None:
        raise ValueError("the critic's output does not depend on its input: the gradient "
                         "penalty is taken with respect to the first argument of the critic")
    # Norms and penalty in fp32 (or fp64), never in an autocast dtype.
    with torch.autocast(device_type=x.device.type, enabled=False):
        if scaler is not None:
            grad = grad.to(accumulation_dtype(grad.dtype)) / scaler.get_scale()
        penalty, norms = ops.norm_penalty(grad, weight, center, one_sided, backend=backend)
    return (penalty, norms.detach()) if return_norms else penalty


def _as_condition_tuple(cond: Condition, batch: int) -> tuple[torch.Tensor, ...]:
    if cond is None:
        return ()
    conditions = (cond,) if isinstance(cond, torch.Tensor) else tuple(cond)
    for index, tensor in enumerate(conditions):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"cond[{index}] must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() == 0 or tensor.shape[0] != batch:
            raise ValueError(f"cond[{index}] must have one row per sample (first dimension "
                             f"{batch}), got shape {tuple(tensor.shape)}")
    return conditions


def _check_critic(critic: Critic, allow_batchnorm: bool) -> None:
    if not callable(critic):
        raise TypeError(f"critic must be an nn.Module or a callable, got {type(critic).__name__}")
    if flag("allow_batchnorm", allow_batchnorm) or not isinstance(critic, nn.Module):
        return
    for name, module in critic.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"the critic contains {type(module).__name__} at '{name or '<root>'}': BatchNorm "
                "mixes the samples of a batch, so a per-sample gradient penalty is not defined "
                "for it (WGAN-GP paper, section 4). Use LayerNorm/GroupNorm or no "
                "normalization, or pass allow_batchnorm=True to penalize it anyway."
            )


def _check_scores(scores: object, batch: int) -> None:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"the critic must return a tensor, got {type(scores).__name__}")
    # (B,), (B, 1) and the (B, 1, 1, 1) of a DCGAN critic ending in a 4×4 convolution.
    if scores.dim() == 0 or scores.shape[0] != batch or scores.numel() != batch:
        raise ValueError(f"the critic must return one value per sample, shape ({batch},), "
                         f"({batch}, 1) or ({batch}, 1, ..., 1), got {tuple(scores.shape)}")
    if not scores.requires_grad:
        raise ValueError("the critic's output does not depend on its input: the gradient "
                         "penalty is taken with respect to the first argument of the critic")
