"""Generators and critics: the WGAN-GP paper's toy MLPs, DCGAN and ResNet critics.

Every model is a plain ``nn.Sequential`` (residual blocks as ``fastgp.nn.Residual``), so that the
engine can read its layers.
"""

from __future__ import annotations

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


def dcgan_critic(image_size: int = 32, channels: int = 3, width: int = 64) -> nn.Sequential:
    """DCGAN critic (Radford et al. 2016) without BatchNorm, as used with a gradient penalty.

    Stride-2 4×4 convolutions halve the image down to 4×4 while doubling the width from
    ``width``; LeakyReLU(0.2) between them; a linear layer maps the 4×4 features to one score.
    32×32 inputs get 3 convolutions (64-128-256), 64×64 inputs 4 (64-128-256-512).
    """
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    layers: list[nn.Module] = []
    size, in_channels, out_channels = image_size, channels, width
    while size > 4:
        layers += [nn.Conv2d(in_channels, out_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        size //= 2
        in_channels, out_channels = out_channels, out_channels * 2
    layers += [nn.Flatten(), nn.Linear(in_channels * 4 * 4, 1)]
    return nn.Sequential(*layers)


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
