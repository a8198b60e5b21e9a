"""Tier 1 penalties against the fp64 oracle (`fastgp.reference`) on every critic family."""

import copy

import pytest
import torch
from backends import BACKENDS
from critics import FAMILIES, FAMILY_IDS, ConditionalCritic, family
from helpers import FP32_TOL, FP64_TOL, parameter_gradients, relative_error
from torch import nn

import fastgp
from fastgp import reference


def _wasserstein_terms(critic, real, fake, cond=()):
    return critic(fake, *cond).mean() - critic(real, *cond).mean()


def _compare_with_oracle(critic, real, fake, eps, tol, cond=(), backend=None, **options):
    """Penalty, norms and every parameter gradient of the total critic loss vs the oracle."""
    penalty, norms = fastgp.gradient_penalty(
        critic, real, fake, eps=eps, cond=cond or None, return_norms=True, backend=backend,
        **options
    )
    loss = _wasserstein_terms(critic, real, fake, cond) + penalty
    oracle_options = {k: v for k, v in options.items() if k in ("weight", "center", "one_sided")}
    critic64 = _as_fp64(critic)
    cast = [t.double() if t.is_floating_point() else t for t in (real, fake, eps, *cond)]
    expected_penalty, expected_norms = reference.gradient_penalty(
        critic64, cast[0], cast[1], cast[2], cond=cast[3:], **oracle_options
    )
    expected_loss = reference.critic_loss(critic64, cast[0], cast[1], cast[2], cond=cast[3:],
                                          **oracle_options)
    errors = {
        "penalty": relative_error(penalty, expected_penalty),
        "norms": relative_error(norms, expected_norms),
        "parameter_gradients": relative_error(parameter_gradients(loss, critic),
                                              parameter_gradients(expected_loss, critic64)),
    }
    assert max(errors.values()) <= tol, errors
    return errors


def _as_fp64(critic):
    return copy.deepcopy(critic).double()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fam", FAMILIES, ids=FAMILY_IDS)
@pytest.mark.parametrize("batch", [1, 3, 257])
def test_gradient_penalty_matches_oracle_fp64(fam, batch, backend):
    critic = fam.critic()
    real, fake, eps = fam.inputs(batch)
    _compare_with_oracle(critic, real, fake, eps, FP64_TOL, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fam", FAMILIES, ids=FAMILY_IDS)
@pytest.mark.parametrize(
    "options",
    [{"weight": 0.1}, {"one_sided": True}, {"center": 0.0}, {"center": 2.0, "weight": 3.0}],
    ids=["lambda0.1", "one_sided", "zero_centred", "centre2"],
)
def test_penalty_variants_match_oracle_fp64(fam, options, backend):
    critic = fam.critic()
    real, fake, eps = fam.inputs(5)
    _compare_with_oracle(critic, real, fake, eps, FP64_TOL, backend=backend, **options)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["mlp", "dcgan", "residual", "sequence_conv1d"])
def test_gradient_penalty_fp32_within_tolerance_of_fp64_oracle(name, backend):
    fam = family(name)
    critic = fam.critic(torch.float32)
    real, fake, eps = fam.inputs(16, torch.float32)
    _compare_with_oracle(critic, real, fake, eps, FP32_TOL, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["dcgan", "residual"])
def test_channels_last_inputs(name, backend):
    fam = family(name)
    critic = fam.critic().to(memory_format=torch.channels_last)
    real, fake, eps = fam.inputs(4)
    real = real.to(memory_format=torch.channels_last)
    fake = fake.to(memory_format=torch.channels_last)
    _compare_with_oracle(critic, real, fake, eps, FP64_TOL, backend=backend)


def test_non_contiguous_inputs():
    fam = family("sequence_conv1d")
    critic = fam.critic()
    real, fake, eps = fam.inputs(6)
    real_t = real.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    fake_s = torch.cat([fake, fake], dim=2)[:, :, ::2]
    fake_s.copy_(fake)
    assert not real_t.is_contiguous() and not fake_s.is_contiguous()
    _compare_with_oracle(critic, real_t, fake_s, eps, FP64_TOL)


def test_conditional_critic_penalizes_input_only():
    critic = ConditionalCritic().double()
    generator = torch.Generator().manual_seed(3)
    real = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    fake = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    eps = torch.rand(7, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (7,), generator=generator)
    _compare_with_oracle(critic, real, fake, eps, FP64_TOL, cond=(labels,))


def test_conditional_critic_with_tuple_of_conditions():
    class ImageToImage(nn.Module):  # pix2pix-style: the source image is a second input
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(6, 4, 3, padding=1), nn.LeakyReLU(0.2),
                                     nn.Flatten(), nn.Linear(4 * 5 * 5, 1))

        def forward(self, target, source, scale):
            return self.net(torch.cat([target, source], dim=1)) * scale

    torch.manual_seed(0)
    critic = ImageToImage().double()
    real, fake, source = (torch.randn(3, 3, 5, 5, dtype=torch.float64) for _ in range(3))
    scale = torch.rand(3, 1, dtype=torch.float64) + 0.5
    eps = torch.rand(3, dtype=torch.float64)
    _compare_with_oracle(critic, real, fake, eps, FP64_TOL, cond=(source, scale))


def test_callable_critic():
    weight = torch.randn(6, dtype=torch.float64, requires_grad=True)

    def critic(x):
        return torch.tanh(x @ weight)

    real, fake, eps = family("mlp").inputs(4)
    penalty = fastgp.gradient_penalty(critic, real, fake, eps=eps)
    expected, _ = reference.gradient_penalty(critic, real, fake, eps)
    assert relative_error(penalty, expected) <= FP64_TOL
    (ours,) = torch.autograd.grad(penalty, weight)
    (theirs,) = torch.autograd.grad(expected, weight)
    assert relative_error(ours, theirs) <= FP64_TOL


def test_default_eps_is_the_canonical_draw():
    fam = family("mlp")
    critic = fam.critic()
    real, fake, _ = fam.inputs(9)
    torch.manual_seed(123)
    penalty = fastgp.gradient_penalty(critic, real, fake)
    torch.manual_seed(123)
    eps = torch.rand(9, dtype=torch.float64)
    expected, _ = reference.gradient_penalty(critic, real, fake, eps)
    assert relative_error(penalty, expected) <= FP64_TOL


def test_real_and_fake_are_constants():
    critic = family("mlp").critic()
    real, fake, eps = family("mlp").inputs(4)
    fake = fake.requires_grad_(True)
    for method in ("explicit", "autograd"):
        critic.zero_grad(set_to_none=True)
        fastgp.gradient_penalty(critic, real, fake, eps=eps, method=method).backward()
        assert fake.grad is None
        assert all(layer.weight.grad is not None for layer in critic
                   if isinstance(layer, torch.nn.Linear)), method


# ----------------------------------------------------------------------------- R1 / R2 / DRAGAN


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fam", FAMILIES, ids=FAMILY_IDS)
def test_r1_penalty_matches_oracle(fam, backend):
    critic = fam.critic()
    real, _, _ = fam.inputs(5)
    penalty, norms = fastgp.r1_penalty(critic, real, gamma=5.0, return_norms=True, backend=backend)
    expected, expected_norms = reference.r1_penalty(critic, real, gamma=5.0)
    assert relative_error(penalty, expected) <= FP64_TOL
    assert relative_error(norms, expected_norms) <= FP64_TOL
    assert relative_error(parameter_gradients(penalty, critic),
                          parameter_gradients(expected, critic)) <= FP64_TOL


@pytest.mark.parametrize("name", ["mlp", "dcgan", "layernorm_smooth"])
def test_dragan_penalty_matches_oracle(name):
    fam = family(name)
    critic = fam.critic()
    real, noise, eps = fam.inputs(6)
    noise = noise.abs().clamp(max=1)
    penalty = fastgp.dragan_penalty(critic, real, noise=noise, eps=eps)
    expected, _ = reference.dragan_penalty(critic, real, noise, eps)
    assert relative_error(penalty, expected) <= FP64_TOL
    assert relative_error(parameter_gradients(penalty, critic),
                          parameter_gradients(expected, critic)) <= FP64_TOL


# ----------------------------------------------------------------------------- mixed precision


def test_grad_scaler_recipe_matches_fp32():
    fam = family("dcgan")
    critic = fam.critic(torch.float32)
    real, fake, eps = fam.inputs(8, torch.float32)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    penalty, norms = fastgp.gradient_penalty(critic, real, fake, eps=eps, scaler=scaler,
                                             return_norms=True)
    expected, expected_norms = fastgp.gradient_penalty(critic, real, fake, eps=eps, return_norms=True)
    assert relative_error(norms, expected_norms) <= FP32_TOL
    assert relative_error(penalty, expected) <= FP32_TOL


def test_grad_scaler_prevents_fp16_underflow():
    class TinyScores(nn.Module):  # fp16 scores whose input gradient lies below fp16's range
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(16, 1)

        def forward(self, x):
            return (self.linear(x.half()) * 1e-6).float()

    torch.manual_seed(0)
    critic = TinyScores()
    with torch.no_grad():
        critic.linear.weight.mul_(1e-2)
    critic.half()
    real, fake = torch.randn(4, 16), torch.randn(4, 16)
    eps = torch.rand(4)
    exact = 1e-6 * critic.linear.weight.float().norm().expand(4)
    _, unscaled = fastgp.gradient_penalty(critic, real, fake, eps=eps, return_norms=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**15)
    _, scaled = fastgp.gradient_penalty(critic, real, fake, eps=eps, scaler=scaler, return_norms=True)
    assert relative_error(scaled, exact) <= 1e-2
    assert relative_error(unscaled, exact) > 0.1  # the case really underflows without the scaler


def test_bf16_autocast_norms_in_fp32_within_tolerance():
    fam = family("mlp")
    critic = fam.critic(torch.float32)
    real, fake, eps = fam.inputs(64, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty, norms = fastgp.gradient_penalty(critic, real, fake, eps=eps, return_norms=True)
    assert penalty.dtype == torch.float32 and norms.dtype == torch.float32
    expected, expected_norms = reference.gradient_penalty(_as_fp64(critic), real.double(),
                                                          fake.double(), eps.double())
    assert relative_error(norms, expected_norms) <= 2e-2
    assert relative_error(penalty, expected) <= 2e-2


def test_a_dcgan_critic_ending_in_a_4x4_convolution_is_drop_in():
    """Scores of shape (B, 1, 1, 1) are one value per sample: the same penalty as (B,)."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 4)).double()
    real = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    fake = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    eps = torch.rand(3, dtype=torch.float64)
    assert critic(real).shape == (3, 1, 1, 1)
    penalty = fastgp.gradient_penalty(critic, real, fake, eps=eps)
    expected, _ = reference.gradient_penalty(lambda x: critic(x).flatten(), real, fake, eps, 10.0)
    assert relative_error(penalty, expected) <= FP64_TOL
