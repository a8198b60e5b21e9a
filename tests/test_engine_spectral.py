"""Spectrally normalized critics (torch.nn.utils.parametrizations.spectral_norm): the passes use
W̃ = W/σ, the gradient is pulled back to the raw weight exactly, and the power iteration
advances once per engine step (as one forward of the module does)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import FP64_TOL, relative_error
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import fastgp
from fastgp import reference


class SNCritic(nn.Module):
    """SNGAN-style: every weight layer spectrally normalized, conv kernels and a linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = spectral_norm(nn.Conv2d(3, 4, 3, padding=1))
        self.c2 = spectral_norm(nn.Conv2d(4, 4, 4, 2, 1))
        self.fc = spectral_norm(nn.Linear(4 * 4 * 4, 1))

    def forward(self, x):
        h = F.leaky_relu(self.c1(x), 0.1)
        h = F.leaky_relu(self.c2(h), 0.1)
        return self.fc(h.flatten(1))


def _case():
    torch.manual_seed(0)
    critic = SNCritic().double()
    generator = torch.Generator().manual_seed(1)
    real, fake = (torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64)
                  for _ in range(2))
    return critic, real, fake, torch.rand(3, generator=generator, dtype=torch.float64)


def _oracle_gradients(critic, real, fake, eps):
    critic = copy.deepcopy(critic).eval()  # no power iteration: u, v as they are
    loss = critic(fake).mean() - critic(real).mean()
    loss = loss + reference.gradient_penalty(lambda x: critic(x).flatten(), real, fake, eps,
                                             10.0)[0]
    return torch.autograd.grad(loss, list(critic.parameters()))


def test_the_engine_step_in_eval_mode_equals_autograd():
    critic, real, fake, eps = _case()
    critic.eval()
    expected = _oracle_gradients(critic, real, fake, eps)
    fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    assert relative_error([p.grad for p in critic.parameters()], list(expected)) <= FP64_TOL


def test_the_engine_step_in_training_advances_the_power_iteration_once():
    critic, real, fake, eps = _case()
    once = copy.deepcopy(critic)
    with torch.no_grad():
        for module in (once.c1, once.c2, once.fc):
            _ = module.weight  # reading it runs one power iteration (training mode)
    expected = _oracle_gradients(once, real, fake, eps)
    fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    assert relative_error([p.grad for p in critic.parameters()], list(expected)) <= FP64_TOL
    assert relative_error(list(critic.buffers()), list(once.buffers())) == 0.0


@pytest.mark.parametrize("train", [True, False])
def test_the_drop_in_equals_the_users_own_autograd_code(train):
    """The user's code calls the critic on fake and real, then the penalty: with autograd that
    is three power iterations, and so it is with the explicit drop-in."""
    critic, real, fake, eps = _case()
    critic.train(train)
    results = {}
    for method in ("explicit", "autograd"):
        model = copy.deepcopy(critic)
        loss = model(fake).mean() - model(real).mean()
        (loss + fastgp.gradient_penalty(model, real, fake, eps=eps, method=method)).backward()
        results[method] = ([p.grad for p in model.parameters()], list(model.buffers()))
    assert relative_error(results["explicit"][0], results["autograd"][0]) <= FP64_TOL
    assert relative_error(results["explicit"][1], results["autograd"][1]) == 0.0


def test_other_parametrizations_and_the_hook_based_spectral_norm_are_refused():
    weight_norm = nn.Sequential(torch.nn.utils.parametrizations.weight_norm(nn.Linear(3, 4)),
                                nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(fastgp.UnsupportedLayerError, match="'0' .*parametrizations.spectral_norm"):
        fastgp.FusedCritic(weight_norm)
    old = nn.Sequential(torch.nn.utils.spectral_norm(nn.Linear(3, 4)), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(fastgp.UnsupportedLayerError, match="'0' .*torch.nn.utils.spectral_norm"):
        fastgp.FusedCritic(old)
