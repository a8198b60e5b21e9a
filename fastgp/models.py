"""The model zoo of the benchmarks, the profiler and the trainer: the WGAN-GP paper's toy MLPs,
DCGAN and ResNet generators and critics.

Most are ``nn.Sequential`` (residual blocks as ``fastgp.nn.Residual``); some critics are written
as users write them, subclasses with their own ``forward`` (InstanceNorm DCGAN, sum-pooled
ResNet), which the engine reads from their code. Image models take and produce
``(B, C, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastgp.nn import Residual


def mlp(in_features: int, out_features: int, hidden: int = 512, depth: int = 3) -> nn.Sequential:
    """``depth`` hidden Linear + ReLU layers of width ``hidden``, then a Linear output layer."""
    if depth < 1 or hidden < 1:
        raise ValueError(f"an MLP needs depth >= 1 and hidden >= 1, got {depth} and {hidden}")
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def toy_generator(noise_dim: int = 2, data_dim: int = 2, hidden: int = 512, depth: int = 3) -> nn.Sequential:
    """Maps noise ``z`` of dimension ``noise_dim`` to a point of dimension ``data_dim``."""
    return mlp(noise_dim, data_dim, hidden, depth)


def toy_critic(data_dim: int = 2, hidden: int = 512, depth: int = 3) -> nn.Sequential:
    """Maps a point to one unbounded score (shape ``(B, 1)``)."""
    return mlp(data_dim, 1, hidden, depth)


def _check_dcgan_size(image_size: int) -> int:
    """The number of 2× resolution steps between 4×4 and ``image_size``."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return int(math.log2(image_size)) - 2


def dcgan_generator(noise_dim: int, image_size: int, channels: int, width: int = 64) -> nn.Sequential:
    """DCGAN generator (Radford et al. 2016), the mirror of :func:`dcgan_critic`.

    Linear(noise → top·4·4) + BatchNorm + ReLU, reshaped to ``(top, 4, 4)`` with
    ``top = width · 2^(k−1)`` for ``k = log2(image_size) − 2`` upsamplings; then k − 1 blocks of
    ConvTranspose2d(4, stride 2, padding 1) + BatchNorm + ReLU that double the resolution and
    halve the width, and a last ConvTranspose2d to ``channels`` + Tanh (the WGAN-GP paper's
    CIFAR-10 DCGAN generator for 32×32: 256·4·4 → 128@8 → 64@16 → 3@32).
    Output ``(B, channels, image_size, image_size)`` in (−1, 1); 8×8 images have one upsampling.
    """
    upsamplings = _check_dcgan_size(image_size)
    top = width * 2 ** (upsamplings - 1)
    layers: list[nn.Module] = [
        nn.Linear(noise_dim, top * 4 * 4), nn.BatchNorm1d(top * 4 * 4), nn.ReLU(),
        nn.Unflatten(1, (top, 4, 4)),
    ]
    in_channels = top
    for _ in range(upsamplings - 1):
        layers += [nn.ConvTranspose2d(in_channels, in_channels // 2, 4, 2, 1),
                   nn.BatchNorm2d(in_channels // 2), nn.ReLU()]
        in_channels //= 2
    # no BatchNorm on the output: the Tanh alone sets the pixel range
    layers += [nn.ConvTranspose2d(in_channels, channels, 4, 2, 1), nn.Tanh()]
    return nn.Sequential(*layers)


def dcgan_critic(image_size: int = 32, channels: int = 3, width: int = 64) -> nn.Sequential:
    """DCGAN critic (Radford et al. 2016) without BatchNorm, as used with a gradient penalty.

    Stride-2 4×4 convolutions halve the image down to 4×4 while doubling the width from
    ``width``; LeakyReLU(0.2) between them; a linear layer maps the 4×4 features to one score.
    8×8 inputs get 1 convolution (64), 32×32 inputs 3 (64-128-256), 64×64 inputs 4
    (64-128-256-512).
    """
    _check_dcgan_size(image_size)
    layers: list[nn.Module] = []
    size, in_channels, out_channels = image_size, channels, width
    while size > 4:
        layers += [nn.Conv2d(in_channels, out_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        size //= 2
        in_channels, out_channels = out_channels, out_channels * 2
    layers += [nn.Flatten(), nn.Linear(in_channels * 4 * 4, 1)]
    return nn.Sequential(*layers)


class InstanceNormDCGANCritic(nn.Module):
    """A DCGAN critic as WGAN-GP code often writes it: its own ``forward``, InstanceNorm2d
    (affine) instead of BatchNorm, in-place LeakyReLU, and a final 4×4 convolution whose scores
    come out as ``(B, 1, 1, 1)``. 32×32 inputs, widths ``width``-2·-4·``width``."""

    def __init__(self, channels: int = 3, width: int = 64) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False),
                                 nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2, True))

        self.stem = nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True))
        self.body = nn.Sequential(block(width, width * 2), block(width * 2, width * 4))
        self.head = nn.Conv2d(width * 4, 1, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


class _PreActivationBlock(nn.Module):
    def __init__(self, width: int, downsample: bool) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x
        h = self.conv2(self.relu(self.conv1(self.relu(x))))  # in place: the skip reads relu(x)
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return skip + h


class SumPoolResNetCritic(nn.Module):
    """An SNGAN-style ResNet critic written as a subclass: pre-activation blocks with in-place
    ReLU at their head, average-pool downsampling, and global *sum* pooling before the head."""

    def __init__(self, channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.Sequential(_PreActivationBlock(width, True),
                                    _PreActivationBlock(width, True),
                                    _PreActivationBlock(width, False))
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(self.stem(x)))
        return self.head(h.sum(dim=(2, 3)))


def spectral_norm_dcgan_critic(image_size: int = 32, channels: int = 3,
                               width: int = 64) -> nn.Sequential:
    """:func:`dcgan_critic` with every weight spectrally normalized
    (``torch.nn.utils.parametrizations.spectral_norm``), as SNGAN-style critics are."""
    critic = dcgan_critic(image_size, channels, width)
    for index, layer in enumerate(critic):
        if isinstance(layer, nn.Linear | nn.Conv2d):
            critic[index] = torch.nn.utils.parametrizations.spectral_norm(layer)
    return critic


def _conv_mean_pool(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2),
                         nn.AvgPool2d(2))


def resnet32_critic(width: int = 128, channels: int = 3) -> nn.Sequential:
    """The WGAN-GP paper's CIFAR-10 ResNet critic (``gan_cifar_resnet.py``, no normalization).

    An optimized first block (conv, ReLU, conv + mean pool; shortcut mean pool + 1×1 conv) takes
    32×32 to 16×16, a downsampling residual block takes it to 8×8, two plain residual blocks
    follow; then ReLU, the spatial mean and a linear layer to one score.
    """
    first = Residual(
        nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                      _conv_mean_pool(width, width, 3)),
        nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(channels, width, 1)),
    )
    down = Residual(
        nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                      _conv_mean_pool(width, width, 3)),
        _conv_mean_pool(width, width, 1),
    )

    def plain_block() -> Residual:
        return Residual(nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1)))

    return nn.Sequential(first, down, plain_block(), plain_block(), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1))


def _upsampling_block(width: int) -> Residual:
    """The paper's ``ResidualBlock(resample='up')``: pre-activation body, upsampled 1×1 shortcut."""
    return Residual(
        nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                      nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                      nn.Conv2d(width, width, 3, padding=1)),
        nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 1)),
    )


def resnet32_generator(noise_dim: int = 128, width: int = 128, channels: int = 3) -> nn.Sequential:
    """The WGAN-GP paper's CIFAR-10 ResNet generator (``gan_cifar_resnet.py``).

    Linear(noise → width·4·4) reshaped to ``(width, 4, 4)``; three upsampling residual blocks
    (BatchNorm, ReLU, nearest 2× upsample, conv 3×3, BatchNorm, ReLU, conv 3×3; shortcut:
    upsample + conv 1×1) take it to 32×32; then BatchNorm, ReLU, conv 3×3 to ``channels`` and
    Tanh. Output ``(B, channels, 32, 32)`` in (−1, 1).
    """
    return nn.Sequential(
        nn.Linear(noise_dim, width * 4 * 4), nn.Unflatten(1, (width, 4, 4)),
        _upsampling_block(width), _upsampling_block(width), _upsampling_block(width),
        nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1), nn.Tanh(),
    )


ARCHITECTURES = ("dcgan", "resnet")


def image_models(sample_shape: tuple[int, ...], noise_dim: int, architecture: str = "dcgan",
                 width: int | None = None) -> tuple[nn.Sequential, nn.Sequential]:
    """``(generator, critic)`` for square images of shape ``sample_shape = (C, H, W)``.

    ``dcgan``: :func:`dcgan_generator` and :func:`dcgan_critic`, any power-of-two size >= 8,
    ``width`` 64 by default. ``resnet``: :func:`resnet32_generator` and :func:`resnet32_critic`,
    32×32 only, ``width`` 128 by default.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}: expected one of {ARCHITECTURES}")
    if len(sample_shape) != 3:
        raise ValueError(f"image models need a (C, H, W) sample shape, got {tuple(sample_shape)}")
    channels, height, image_width = sample_shape
    if height != image_width:
        raise ValueError(f"image models need square images, got {height}×{image_width}")
    if architecture == "dcgan":
        width = 64 if width is None else width
        return (dcgan_generator(noise_dim, height, channels, width),
                dcgan_critic(height, channels, width))
    if height != 32:
        raise ValueError(f"the resnet architecture needs 32×32 images, got {height}×{image_width}; "
                         "resize the data to 32×32 (image_size=32) or use dcgan")
    width = 128 if width is None else width
    return resnet32_generator(noise_dim, width, channels), resnet32_critic(width, channels)


def paper_adam(parameters, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.9)
               ) -> torch.optim.Adam:
    """Adam with the WGAN-GP paper's settings (its released code: lr 1e-4, β = (0.5, 0.9)) unless
    given, fused: one kernel for all parameters (on the 2-core CPU 0.33 vs 1.02 ms per step for the
    toy MLP, 0.24 vs 3.24 ms for the DCGAN-32 critic, against the per-parameter loop), so a
    measured step counts the penalty's work, not the optimizer's dispatch."""
    return torch.optim.Adam(parameters, lr, betas=betas, fused=True)
