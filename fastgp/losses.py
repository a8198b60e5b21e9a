"""GAN losses on critic scores: Wasserstein, BCE (minimax and non-saturating), weight clipping.

Every loss takes the raw scores (critic outputs or discriminator logits) of a batch, shape
``(B,)`` or ``(B, 1)``, and returns a scalar to minimize.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastgp.validation import real_number


def wasserstein_estimate(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The critic's estimate of the Wasserstein-1 distance: ``E[C(real)] − E[C(fake)]``."""
    return real_scores.mean() - fake_scores.mean()


def critic_wasserstein_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Critic loss ``E[C(fake)] − E[C(real)]`` (the negated W estimate; add the penalty to it)."""
    return fake_scores.mean() - real_scores.mean()


def generator_wasserstein_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator loss ``−E[C(G(z))]``."""
    return -fake_scores.mean()


def discriminator_bce_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Vanilla GAN discriminator loss ``−E[log σ(D(x))] − E[log(1 − σ(D(G(z))))]``."""
    real_term = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake_term = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real_term + fake_term


def generator_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``−E[log σ(D(G(z)))]`` (Goodfellow et al. 2014, §3)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def generator_minimax_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Minimax (saturating) generator loss ``E[log(1 − σ(D(G(z))))] = −E[softplus(D(G(z)))]``."""
    return -F.softplus(fake_logits).mean()


@torch.no_grad()
def clip_weights_(critic: nn.Module, clip: float = 0.01) -> None:
    """Original WGAN (Arjovsky et al. 2017): clamp every critic parameter to ``[−clip, clip]`` in place."""
    clip = real_number("clip", clip, positive=True)
    for parameter in critic.parameters():
        parameter.clamp_(-clip, clip)
