"""Generators and critics for the toy sets: the WGAN-GP paper's ReLU MLPs.

Both are plain ``nn.Sequential`` stacks of Linear and ReLU layers: the paper's toy models
(three hidden layers of 512 units, noise of dimension 2).
"""

from __future__ import annotations

from torch import nn


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
