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

import warnings
import weakref
from collections.abc import Callable, Sequence

import torch
from torch import nn

from fastgp import ops
from fastgp.engine import FusedCritic, UnsupportedLayerError
from fastgp.engine.drop_in import engine_for, explicit_penalty
from fastgp.engine.layers import uses_running_statistics
from fastgp.ops._checks import accumulation_dtype
from fastgp.validation import (
    check_batched_float,
    check_eps,
    check_finite,
    check_grad_enabled,
    check_one_score_per_sample,
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
    method: str = "auto",
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
        scaler: an fp16 ``GradScaler``. On autograd's path the input gradient is taken of the
            *scaled* output and unscaled before the norm, as in PyTorch's AMP recipe, so small
            gradients do not underflow; the explicit passes form no fp16 gradient and need no
            scaling. Norms and penalty are computed in fp32 outside autocast.
        allow_batchnorm: BatchNorm mixes samples, so a per-sample penalty is not what the
            WGAN-GP paper defines (§4); critics with BatchNorm are refused unless this is True.
        check_inputs: check ``real``, ``fake`` and ``eps`` for NaN/Inf and ε ∉ [0, 1] (one device
            sync each). Shape, dtype and device checks are always made.
        backend: implementation of the interpolation and norm/penalty ops: ``auto``,
            ``triton``, ``native`` or ``torch``; None uses :func:`fastgp.get_backend`.
        method: ``"auto"`` (default) takes the engine's explicit passes when it can read the
            critic (an ``nn.Module`` whose forward the engine reads, see
            :func:`fastgp.explain`; not under autocast) and autograd's double backward
            otherwise, with one warning per critic naming the reason; ``"explicit"`` raises
            instead of falling back (under autocast it runs the passes in the critic's dtype,
            fp32); ``"autograd"`` always differentiates twice with autograd. Both give the same
            penalty and parameter gradients up to rounding.

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
    engine = _engine(critic, x_hat, conditions, backend, method)
    explicit = _explicit(critic, engine, method, x_hat, "lp" if one_sided else "gp", weight,
                         center, conditions)
    if explicit is not None:
        return (explicit[0], explicit[1].detach()) if return_norms else explicit[0]
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
    method: str = "auto",
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
    x = x.detach()
    engine = _engine(critic, x, conditions, backend, method)
    explicit = _explicit(critic, engine, method, x, "r1", gamma, 0.0, conditions)
    if explicit is not None:
        return (explicit[0], explicit[1].detach()) if return_norms else explicit[0]
    return _penalty_at(critic, x, conditions, gamma / 2, 0.0, False, return_norms, scaler,
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
    method: str = "auto",
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
        check_inputs=check_inputs, backend=backend, method=method,
    )


METHODS = ("auto", "explicit", "autograd")
_WARNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # critic -> reasons warned


def _engine(critic: Critic, x: torch.Tensor, conditions: tuple[torch.Tensor, ...],
            backend: str | None, method: str) -> FusedCritic | None:
    """The engine for the explicit passes, or None for autograd's double backward (``auto``
    warns once per critic and reason; ``explicit`` raises)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "autograd":
        return None
    critic = _unwrapped(critic)
    reason, engine = _explicit_blocker(critic, x, method), None
    if reason is None:
        engine, reason = engine_for(critic, backend, len(conditions))
    first = None if engine is None else next(engine.parameters(), None)
    if first is not None and (first.dtype != x.dtype or first.device != x.device):
        reason, engine = (f"the samples ({x.dtype} on {x.device}) are not in the critic's dtype "
                          f"and device ({first.dtype} on {first.device})"), None
    if engine is not None:
        return engine
    if method == "explicit":
        raise UnsupportedLayerError(f"method='explicit' is not possible: {reason}")
    _warn_once(critic, reason)
    return None


def _explicit(critic, engine, method, x, penalty, weight, center, conditions):
    """``(P, norms)`` by the explicit passes, or None for autograd: an op the reader accepted
    but that refuses these tensors when it runs (``x - x.mean(0)`` mixes the batch) makes
    ``auto`` fall back with a warning, and ``explicit`` raise."""
    if engine is None:
        return None
    try:
        return explicit_penalty(engine, x, penalty, weight, center, conditions)
    except UnsupportedLayerError as error:
        if method == "explicit":
            raise
        _warn_once(critic, str(error))
        return None


def _unwrapped(critic: Critic) -> Critic:
    """A data-parallel wrapper holds the critic; its parameters (and DDP's hooks on them) are
    the wrapped module's, which is what the engine reads."""
    if isinstance(critic, nn.parallel.DistributedDataParallel | nn.DataParallel):
        return critic.module
    return critic


def _warn_once(critic: Critic, reason: str) -> None:
    critic = _unwrapped(critic)
    warned = _WARNED.setdefault(critic, set()) if isinstance(critic, nn.Module) else set()
    if reason not in warned:
        warned.add(reason)
        warnings.warn(f"fastgp: the penalty of {type(critic).__name__} takes autograd's double "
                      f"backward (slower), because {reason}. method='autograd' silences this.",
                      stacklevel=4)


def _explicit_blocker(critic, x, method) -> str | None:
    """Why the explicit passes cannot serve this call whatever the critic's layers.

    Under autocast the engine runs its passes in the critic's own dtype (fp32): exact, but
    without the bf16/fp16 matmul rates that autograd's double backward gets under autocast, so
    ``auto`` keeps autograd there and ``explicit`` takes the fp32 passes. A ``GradScaler``
    needs nothing from the explicit passes: no fp16 input gradient can underflow in them, and
    the scale reaches the parameter gradients through the backward of the user's scaled loss."""
    if not isinstance(critic, nn.Module):
        return "the critic is a function, not an nn.Module whose layers the engine can read"
    if method == "auto" and torch.is_autocast_enabled(x.device.type):
        return ("under autocast the engine would run its passes in fp32 (exact, but without "
                "the autocast dtype's matmul speed); method='explicit' takes them")
    return None


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
            # The scale as a device tensor: scaler.get_scale() reads it on the host, a sync.
            scale = scaler.scale(torch.ones((), device=grad.device))
            grad = grad.to(accumulation_dtype(grad.dtype)) / scale
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
        # In eval mode with running statistics BatchNorm is a fixed per-channel affine map.
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not uses_running_statistics(
                module):
            raise ValueError(
                f"the critic contains {type(module).__name__} at '{name or '<root>'}' in "
                "training mode: BatchNorm then mixes the samples of a batch, so a per-sample "
                "gradient penalty is not defined for it (WGAN-GP paper, section 4). Use "
                "LayerNorm/GroupNorm/InstanceNorm or no normalization, put the critic in eval "
                "mode, or pass allow_batchnorm=True to penalize it anyway."
            )


def _check_scores(scores: object, batch: int) -> None:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"the critic must return a tensor, got {type(scores).__name__}")
    check_one_score_per_sample(scores, batch)
    if not scores.requires_grad:
        raise ValueError("the critic's output does not depend on its input: the gradient "
                         "penalty is taken with respect to the first argument of the critic")
