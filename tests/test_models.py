"""Image generators and critics have the stated shapes, and the critics are engine-readable."""

import pytest
import torch
from torch import nn

import fastgp
from fastgp import reference
from fastgp.models import (
    dcgan_critic,
    dcgan_generator,
    image_models,
    resnet32_critic,
    resnet32_generator,
)
from fastgp.nn import Residual


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_dcgan_pair_shapes(size, channels):
    torch.manual_seed(0)
    generator, critic = image_models((channels, size, size), noise_dim=5, width=4)
    images = generator(torch.randn(3, 5))
    assert images.shape == (3, channels, size, size)
    assert images.abs().max() < 1
    assert critic(images).shape == (3, 1)
    fastgp.FusedCritic(critic)


@pytest.mark.parametrize(("size", "upsamplings"), [(8, 1), (16, 2), (32, 3), (64, 4)])
def test_dcgan_generator_mirrors_the_critic(size, upsamplings):
    generator = dcgan_generator(noise_dim=2, image_size=size, channels=3, width=4)
    deconvs = [m for m in generator if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == upsamplings
    assert generator[0].out_features == 4 * 2 ** (upsamplings - 1) * 16
    assert [d.in_channels for d in deconvs] == [4 * 2 ** (upsamplings - 1 - i) for i in range(upsamplings)]
    assert deconvs[-1].out_channels == 3
    critic_convs = [m for m in dcgan_critic(size, 3, width=4) if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in critic_convs] == [d.in_channels for d in reversed(deconvs)]


def test_digits_sized_critic_matches_the_reference_step():
    torch.manual_seed(0)
    critic = dcgan_critic(image_size=8, channels=1, width=64)
    assert [type(m) for m in critic] == [nn.Conv2d, nn.LeakyReLU, nn.Flatten, nn.Linear]
    real, fake, eps = torch.rand(4, 1, 8, 8) * 2 - 1, torch.rand(4, 1, 8, 8) * 2 - 1, torch.rand(4)
    fastgp.FusedCritic(critic, backend="torch").step(real, fake, eps=eps)
    fused = [p.grad.clone() for p in critic.parameters()]
    expected = torch.autograd.grad(reference.critic_loss(critic, real, fake, eps), list(critic.parameters()))
    for got, want in zip(fused, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_resnet_pair_shapes(channels):
    torch.manual_seed(0)
    generator, critic = image_models((channels, 32, 32), noise_dim=6, architecture="resnet", width=4)
    images = generator(torch.randn(2, 6))
    assert images.shape == (2, channels, 32, 32)
    assert images.abs().max() < 1
    assert critic(images).shape == (2, 1)
    assert sum(isinstance(m, Residual) for m in generator) == 3
    fastgp.FusedCritic(critic)


def test_resnet_blocks_upsample_by_two():
    generator = resnet32_generator(noise_dim=3, width=4, channels=3)
    x = generator[1](generator[0](torch.randn(2, 3)))
    sizes = []
    for block in generator[2:5]:
        x = block(x)
        sizes.append(x.shape[-1])
    assert sizes == [8, 16, 32]
    assert x.shape == (2, 4, 32, 32)


def test_default_widths():
    generator, critic = image_models((3, 32, 32), noise_dim=8, architecture="resnet")
    assert generator[0].out_features == 128 * 16
    assert critic[-1].in_features == 128
    generator, critic = image_models((1, 8, 8), noise_dim=8)
    assert generator[0].out_features == 64 * 16
    assert critic[0].out_channels == 64
    assert isinstance(resnet32_critic(width=4), nn.Sequential)


@pytest.mark.parametrize("size", [4, 12, 31, 0])
def test_dcgan_rejects_sizes_that_are_not_powers_of_two(size):
    with pytest.raises(ValueError, match="power of two >= 8"):
        dcgan_generator(noise_dim=2, image_size=size, channels=1)
    with pytest.raises(ValueError, match="power of two >= 8"):
        image_models((1, size, size), noise_dim=2)


def test_image_models_errors():
    with pytest.raises(ValueError, match="needs 32×32 images, got 16×16"):
        image_models((3, 16, 16), noise_dim=2, architecture="resnet")
    with pytest.raises(ValueError, match="square images, got 16×32"):
        image_models((3, 16, 32), noise_dim=2)
    with pytest.raises(ValueError, match=r"\(C, H, W\) sample shape, got \(2,\)"):
        image_models((2,), noise_dim=2)
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        image_models((3, 32, 32), noise_dim=2, architecture="vgg")
