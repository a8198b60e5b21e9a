"""Spectrally normalized critics, in both forms (torch.nn.utils.parametrizations.spectral_norm
and the hook-based torch.nn.utils.spectral_norm): the passes use W̃ = W/σ, the gradient is pulled
back to the raw weight exactly, and the power iteration advances once per engine step (as one
forward of the module does)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import FP64_TOL, relative_error
from torch import nn
from torch.nn.utils import parametrizations

import fastgp
from fastgp import reference

#: The two forms of spectral normalization, by name.
FORMS = {"parametrization": parametrizations.spectral_norm,
         "hook": torch.nn.utils.spectral_norm}


class SNCritic(nn.Module):
    """SNGAN-style: every weight layer spectrally normalized, conv kernels and a linear head;
    one normalized along another dim (W_mat permuted), one with two power-iteration steps."""

    def __init__(self, spectral_norm):
        super().__init__()
        self.c1 = spectral_norm(nn.Conv2d(3, 4, 3, padding=1), dim=1)
        self.c2 = spectral_norm(nn.Conv2d(4, 4, 4, 2, 1), n_power_iterations=2)
        self.fc = spectral_norm(nn.Linear(4 * 4 * 4, 1))

    def forward(self, x):
        h = F.leaky_relu(self.c1(x), 0.1)
        h = F.leaky_relu(self.c2(h), 0.1)
        return self.fc(h.flatten(1))


def _case(form):
    torch.manual_seed(0)
    critic = SNCritic(FORMS[form]).double()
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


@pytest.mark.parametrize("form", FORMS)
def test_the_engine_step_in_eval_mode_equals_autograd(form):
    critic, real, fake, eps = _case(form)
    critic.eval()
    expected = _oracle_gradients(critic, real, fake, eps)
    buffers = copy.deepcopy(list(critic.buffers()))
    fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    assert relative_error([p.grad for p in critic.parameters()], list(expected)) <= FP64_TOL
    assert relative_error(list(critic.buffers()), buffers) == 0.0  # no power iteration


@pytest.mark.parametrize("form", FORMS)
def test_the_engine_step_in_training_advances_the_power_iteration_once(form):
    critic, real, fake, eps = _case(form)
    once = copy.deepcopy(critic)
    with torch.no_grad():
        once(real)  # one forward: one power iteration per layer (training mode)
    expected = _oracle_gradients(once, real, fake, eps)
    fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    assert relative_error([p.grad for p in critic.parameters()], list(expected)) <= FP64_TOL
    assert relative_error(list(critic.buffers()), list(once.buffers())) == 0.0


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("train", [True, False])
def test_the_drop_in_equals_the_users_own_autograd_code(form, train):
    """The user's code calls the critic on fake and real, then the penalty: with autograd that
    is three power iterations, and so it is with the explicit drop-in."""
    critic, real, fake, eps = _case(form)
    critic.train(train)
    results = {}
    for method in ("explicit", "autograd"):
        model = copy.deepcopy(critic)
        loss = model(fake).mean() - model(real).mean()
        penalty = fastgp.gradient_penalty(model, real, fake, eps=eps, method=method)
        (loss + penalty).backward()
        results[method] = ([penalty, *(p.grad for p in model.parameters())],
                           list(model.buffers()))
    assert relative_error(results["explicit"][0], results["autograd"][0]) <= FP64_TOL
    assert relative_error(results["explicit"][1], results["autograd"][1]) == 0.0


def test_a_critic_read_again_after_remove_spectral_norm_uses_the_plain_weight():
    critic, real, fake, eps = _case("hook")
    fused = fastgp.FusedCritic(critic)
    fused.step(real, fake, eps=eps)
    for layer in (critic.c1, critic.c2, critic.fc):
        torch.nn.utils.remove_spectral_norm(layer)
    expected = _oracle_gradients(critic, real, fake, eps)
    fused.step(real, fake, eps=eps)
    assert relative_error([p.grad for p in critic.parameters()], list(expected)) <= FP64_TOL


def _with_another_pre_hook(layer):
    layer.register_forward_pre_hook(lambda module, args: None)
    return layer


@pytest.mark.parametrize("make,words", [
    (lambda: parametrizations.weight_norm(nn.Linear(3, 4)),
     ["'0' (ParametrizedLinear)", "weight_norm"]),
    (lambda: torch.nn.utils.weight_norm(nn.Linear(3, 4)),
     ["'0' (Linear)", "torch.nn.utils.weight_norm"]),
    (lambda: _with_another_pre_hook(torch.nn.utils.spectral_norm(nn.Linear(3, 4))),
     ["'0' (Linear)", "torch.nn.utils.spectral_norm", "no other hook"]),
    (lambda: torch.nn.utils.spectral_norm(nn.Linear(3, 4), name="bias"),
     ["'0' (Linear)", "torch.nn.utils.spectral_norm"]),
], ids=["weight_norm", "hook-based weight_norm", "spectral_norm and another hook",
        "spectral_norm of the bias"])
def test_weight_norm_and_spectral_norms_the_engine_does_not_read_are_refused(make, words):
    with pytest.raises(fastgp.UnsupportedLayerError) as error:
        fastgp.FusedCritic(nn.Sequential(make(), nn.ReLU(), nn.Linear(4, 1)))
    assert all(word in str(error.value) for word in words), str(error.value)


@pytest.mark.parametrize("form", FORMS)
def test_a_spectral_norm_of_a_linear_weight_is_read_in_both_forms(form):
    fastgp.FusedCritic(nn.Sequential(FORMS[form](nn.Linear(3, 4)), nn.ReLU(), nn.Linear(4, 1)))


class TiedSpectralNorm(nn.Module):
    """One spectrally normalized layer called twice in one forward."""

    def __init__(self, normalize):
        super().__init__()
        self.fc = normalize(nn.Linear(4, 4))
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(F.leaky_relu(self.fc(F.leaky_relu(self.fc(x), 0.2)), 0.2))


@pytest.mark.parametrize("normalize", list(FORMS.values()), ids=list(FORMS))
def test_a_normalized_layer_called_twice_is_refused_in_training_and_read_in_eval(normalize):
    """Eager PyTorch runs a power iteration per call (two W̃ in one forward in training); the
    engine shares one per step, so it reads such a critic in eval mode only."""
    torch.manual_seed(0)
    critic = TiedSpectralNorm(normalize).double()
    with pytest.raises(fastgp.UnsupportedLayerError, match="called twice .* training mode"):
        fastgp.FusedCritic(critic)
    critic.eval()
    real, fake = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    eps = torch.rand(3, dtype=torch.float64)
    loss = critic(fake).mean() - critic(real).mean()
    loss = loss + reference.gradient_penalty(lambda x: critic(x).flatten(), real, fake, eps,
                                             10.0)[0]
    expected = torch.autograd.grad(loss, list(critic.parameters()))
    fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    assert relative_error([p.grad for p in critic.parameters()], list(expected)) <= FP64_TOL
