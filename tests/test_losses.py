"""Losses against their textbook formulas, written out independently in fp64."""

import pytest
import torch
from helpers import FP64_TOL, relative_error
from torch import nn

import fastgp

REAL = torch.randn(17, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
FAKE = torch.randn(17, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def test_wasserstein_losses():
    assert relative_error(fastgp.wasserstein_estimate(REAL, FAKE),
                          REAL.mean() - FAKE.mean()) <= FP64_TOL
    assert relative_error(fastgp.critic_wasserstein_loss(REAL, FAKE),
                          FAKE.mean() - REAL.mean()) <= FP64_TOL
    assert relative_error(fastgp.generator_wasserstein_loss(FAKE), -FAKE.mean()) <= FP64_TOL


def test_bce_losses_match_log_sigmoid_formulas():
    sigmoid_real, sigmoid_fake = torch.sigmoid(REAL), torch.sigmoid(FAKE)
    expected = -(torch.log(sigmoid_real).mean() + torch.log(1 - sigmoid_fake).mean())
    assert relative_error(fastgp.discriminator_bce_loss(REAL, FAKE), expected) <= 1e-12
    assert relative_error(fastgp.generator_nonsaturating_loss(FAKE),
                          -torch.log(sigmoid_fake).mean()) <= 1e-12
    assert relative_error(fastgp.generator_minimax_loss(FAKE),
                          torch.log(1 - sigmoid_fake).mean()) <= 1e-12


def test_bce_losses_are_stable_for_large_logits():
    logits = torch.tensor([[200.0], [-200.0]], dtype=torch.float64)
    for value in (fastgp.discriminator_bce_loss(logits, -logits),
                  fastgp.generator_nonsaturating_loss(logits), fastgp.generator_minimax_loss(logits)):
        assert torch.isfinite(value)


def test_clip_weights():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 50), nn.ReLU(), nn.Linear(50, 1))
    with torch.no_grad():
        for parameter in critic.parameters():
            parameter.mul_(10)
    before = [p.detach().clone() for p in critic.parameters()]
    fastgp.clip_weights_(critic, 0.05)
    for old, new in zip(before, critic.parameters(), strict=True):
        assert torch.equal(new, old.clamp(-0.05, 0.05))
    with pytest.raises(ValueError, match="clip must be > 0"):
        fastgp.clip_weights_(critic, 0.0)
