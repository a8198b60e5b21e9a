"""The critic's and the generator's objectives for each loss and penalty of the trainer.

Critic loss, minimized over the critic's parameters θ (scores ``s = C_θ(x)``):

- ``wgan-*``: ``E[C(fake)] − E[C(real)] + P``;
- ``gan``: ``−E[log σ(D(real))] − E[log(1 − σ(D(fake)))] + P``;

with the penalty ``P`` one of ``gp`` ``λ·E[(‖∇C(x̂)‖ − 1)²]``, ``lp`` ``λ·E[max(0, ‖∇C(x̂)‖ − 1)²]``
(x̂ = ε·real + (1−ε)·fake), ``r1``/``r2`` ``λ/2·E[‖∇C(x)‖²]`` at real / generated samples,
``dragan`` (GP around perturbed real samples) or ``none``. Generator loss: ``−E[C(G(z))]`` for the
WGANs, the non-saturating ``−E[log σ(D(G(z)))]`` for ``gan``.

The Wasserstein losses with GP, LP, R1, R2 or no penalty run on :class:`fastgp.FusedCritic`
(no double backward); the BCE loss, DRAGAN and mixed precision run through autograd with the
Tier 1 penalties.

Mixed precision (``precision="bf16"|"fp16"``): the critic's forwards run under autocast; the
penalty's norms and the losses are fp32. With fp16 the critic loss is scaled by a
``GradScaler`` and the penalty follows PyTorch's AMP recipe: the input gradient is taken of the
*scaled* scores and unscaled before the norm, so small gradients do not underflow in fp16.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from fastgp.engine import PENALTIES as ENGINE_PENALTIES
from fastgp.engine import CriticStep, FusedCritic, UnsupportedLayerError
from fastgp.losses import (
    critic_wasserstein_loss,
    discriminator_bce_loss,
    generator_nonsaturating_loss,
    generator_wasserstein_loss,
    wasserstein_estimate,
)
from fastgp.penalty import dragan_penalty, gradient_penalty, r1_penalty
from fastgp.train.config import TrainConfig

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Objectives:
    """Critic step (gradients into ``.grad``) and generator loss for a resolved config."""

    def __init__(self, critic: nn.Module, config: TrainConfig) -> None:
        self.critic = critic
        self.loss = config.loss
        self.penalty = config.penalty
        self.weight = float(config.gp_weight)
        self.penalty_every = config.penalty_every
        self.precision = config.precision
        self.device_type = torch.device(config.device).type
        # fp16 needs loss scaling, bf16 has fp32's exponent range and does not.
        self.scaler = torch.amp.GradScaler(self.device_type) if config.precision == "fp16" else None
        self.engine = self._engine_for(critic, config.critic_step)
        self._engine_step = self._run_engine
        if config.compile:
            if self.engine is None:
                raise ValueError(
                    f"compile=True needs the engine's critic step, and this run uses "
                    f"{self.path_name}: torch.compile cannot compile autograd's double backward "
                    "(\"aot_autograd does not currently support double backward\")")
            # One graph per (penalty, weight) pair: two with lazy regularization.
            self._engine_step = torch.compile(self._run_engine, fullgraph=True)

    def _engine_for(self, critic: nn.Module, choice: str) -> FusedCritic | None:
        """The engine when the loss, penalty and critic allow it and ``choice`` does not forbid it."""
        if choice == "tier1":
            return None
        reason = None
        if self.loss == "gan":
            reason = "the BCE loss needs per-sample score gradients, which the engine does not seed"
        elif self.penalty not in ENGINE_PENALTIES:
            reason = f"the engine has no {self.penalty} penalty"
        elif self.precision != "fp32":
            reason = "the engine computes in the critic's dtype and does not run under autocast"
        else:
            try:
                return FusedCritic(critic)
            except UnsupportedLayerError as error:
                reason = str(error)
        if choice == "engine":
            raise ValueError(f"critic_step='engine' is not possible here: {reason}")
        return None

    @property
    def path_name(self) -> str:
        return "engine (FusedCritic)" if self.engine is not None else "tier1 (autograd)"

    def penalty_due(self, critic_step_index: int) -> bool:
        """Lazy regularization: the penalty runs on every ``penalty_every``-th critic step."""
        return self.penalty != "none" and critic_step_index % self.penalty_every == 0

    def critic_step(self, real: torch.Tensor, fake: torch.Tensor, with_penalty: bool,
                    rng: torch.Generator | None = None,
                    eps: torch.Tensor | None = None) -> CriticStep:
        """Set every critic ``.grad`` to the gradient of the critic loss; return its statistics.

        With lazy regularization the penalty is weighted by ``penalty_every`` on the steps that
        carry it, so its average over steps stays ``λ·P``. ``rng`` draws ε and DRAGAN's noise
        (the global generator when None); ``eps`` (B,) fixes GP/LP's interpolation weights.
        """
        penalty = self.penalty if with_penalty else "none"
        weight = self.weight * self.penalty_every
        if penalty in ("gp", "lp") and eps is None:
            eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype, generator=rng)
        if self.engine is not None:
            loss, wasserstein, value, norms = self._engine_step(
                real, fake, eps if penalty in ("gp", "lp") else None, penalty, weight)
            return CriticStep(loss, wasserstein, value, norms if penalty in ("gp", "lp") else None)
        with self.autocast():
            real_scores, fake_scores = self.critic(real), self.critic(fake)
        real_scores, fake_scores = at_least_fp32(real_scores), at_least_fp32(fake_scores)
        if self.loss == "gan":
            main = discriminator_bce_loss(real_scores, fake_scores)
        else:
            main = critic_wasserstein_loss(real_scores, fake_scores)
        with self.autocast():
            value, norms = self._autograd_penalty(penalty, weight, real, fake, rng, eps)
        loss = main + value
        for parameter in self.critic.parameters():
            parameter.grad = None
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return CriticStep(loss.detach(), wasserstein_estimate(real_scores, fake_scores).detach(),
                           value.detach(), norms)

    def _run_engine(self, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None,
                    penalty: str, weight: float):
        # The data were checked when loaded and a diverging generator is caught by the trainer's
        # finiteness check of every logged row: no per-step device sync for the value checks.
        result = self.engine.step(real, fake, penalty=penalty, weight=weight, eps=eps,
                                  check_inputs=False)
        return result.loss, result.wasserstein, result.penalty, result.norms

    def autocast(self):
        """Autocast for the critic's and generator's forwards (nothing at fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=AUTOCAST_DTYPES[self.precision])

    def _autograd_penalty(self, penalty: str, weight: float, real: torch.Tensor,
                          fake: torch.Tensor, rng: torch.Generator | None,
                          eps: torch.Tensor | None):
        # The trainer picks the engine itself (critic_step); this path is autograd's by name.
        common = {"return_norms": True, "check_inputs": False, "scaler": self.scaler,
                  "method": "autograd"}
        if penalty in ("gp", "lp"):
            return gradient_penalty(self.critic, real, fake, weight=weight, eps=eps,
                                    one_sided=penalty == "lp", **common)
        if penalty == "r1":
            return r1_penalty(self.critic, real, gamma=weight, **common)[0], None
        if penalty == "r2":
            return r1_penalty(self.critic, fake, gamma=weight, **common)[0], None
        if penalty == "dragan":
            noise = torch.rand(real.shape, device=real.device, dtype=real.dtype, generator=rng)
            eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype, generator=rng)
            return dragan_penalty(self.critic, real, weight=weight, noise=noise, eps=eps, **common)
        return real.new_zeros(()), None

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        fake_scores = at_least_fp32(fake_scores)
        if self.loss == "gan":
            return generator_nonsaturating_loss(fake_scores)
        return generator_wasserstein_loss(fake_scores)


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Autocast's fp16/bf16 outputs in fp32, for losses; fp32 and fp64 unchanged."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def interpolate_gradient_norms(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                               rng: torch.Generator | None = None) -> torch.Tensor:
    """``‖∇ₓC(x̂)‖₂`` per sample at random interpolates (one first-order backward, no graph kept):
    the 1-Lipschitz diagnostic for runs whose penalty does not measure it."""
    eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype, generator=rng)
    eps = eps.view(-1, *([1] * (real.dim() - 1)))
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    return gradient.flatten(1).norm(dim=1)
