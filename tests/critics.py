"""Critic families the tests run every penalty path on, with matching input factories.

Each entry builds a small critic and a batch of inputs of the right shape, so that a test can
sweep the families with one parametrization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ResidualCritic(nn.Module):
    """Conv stem, two pre-activation residual blocks (one downsampling), pooled linear head."""

    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.block1 = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                    nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))
        self.block2 = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                    nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                    nn.AvgPool2d(2))
        self.shortcut2 = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(channels, channels, 1))
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.block1(h)
        h = self.shortcut2(h) + self.block2(h)
        return self.head(torch.relu(h).mean(dim=(2, 3)))


class SequenceCritic(nn.Module):
    """1-D convolutions over a sequence ``(B, channels, length)``, mean over time, linear head."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, 8, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(8, 8, 3, stride=2, dilation=2), nn.GELU(),
        )
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=2)).squeeze(1)


class ConditionalCritic(nn.Module):
    """Projection-style conditional critic: ``C(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩``."""

    def __init__(self, features: int = 5, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, 16), nn.LeakyReLU(0.2))
        self.head = nn.Linear(16, 1)
        self.embed = nn.Embedding(classes, 16)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)


class DropoutConvCritic(nn.Module):
    """Dropout in training mode as conv critics write it: ``Dropout2d`` (a mask per channel)
    after a convolution, ``F.dropout`` (a mask per element) on a 4-D activation, which the
    engine runs channels-last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 4, 2, 1)
        self.drop = nn.Dropout2d(0.25)
        self.conv2 = nn.Conv2d(6, 8, 4, 2, 1, padding_mode="circular")
        self.fc = nn.Linear(8 * 2 * 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.leaky_relu(self.conv1(x), 0.2))
        h = F.dropout(F.leaky_relu(self.conv2(h), 0.2), 0.3, training=self.training)
        return self.fc(h.flatten(1))


#: Critics with dropout in training mode, and their sample shapes.
DROPOUT_CRITICS = {
    "mlp_dropout": (lambda: nn.Sequential(
        nn.Linear(5, 16), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(16, 16), nn.ReLU(),
        nn.Dropout(0.3), nn.Linear(16, 1)), (5,)),
    "smooth_dropout": (lambda: nn.Sequential(
        nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.4), nn.Linear(16, 16), nn.SiLU(),
        nn.Linear(16, 1)), (5,)),
    "conv_dropout": (DropoutConvCritic, (3, 8, 8)),
}


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[], nn.Module]
    sample_shape: tuple[int, ...]

    def inputs(self, batch: int, dtype: torch.dtype = torch.float64, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        shape = (batch, *self.sample_shape)
        real = torch.randn(shape, generator=generator, dtype=dtype)
        fake = torch.randn(shape, generator=generator, dtype=dtype)
        eps = torch.rand(batch, generator=generator, dtype=dtype)
        return real, fake, eps

    def critic(self, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.build().to(dtype)


FAMILIES = [
    Family("mlp", lambda: nn.Sequential(nn.Linear(6, 32), nn.LeakyReLU(0.2), nn.Linear(32, 32),
                                        nn.ReLU(), nn.Linear(32, 1)), (6,)),
    Family("dcgan", lambda: nn.Sequential(
        nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 1)), (3, 8, 8)),
    Family("layernorm_smooth", lambda: nn.Sequential(
        nn.Linear(10, 32), nn.LayerNorm(32), nn.SiLU(), nn.Linear(32, 32), nn.Tanh(),
        nn.Linear(32, 1)), (10,)),
    Family("sequence_conv1d", SequenceCritic, (4, 17)),
    Family("residual", ResidualCritic, (3, 8, 8)),
    Family("volume_conv3d", lambda: nn.Sequential(
        nn.Conv3d(2, 4, 3, stride=2, padding=1), nn.Softplus(), nn.Flatten(),
        nn.Linear(4 * 2 * 2 * 2, 1)), (2, 4, 4, 4)),
]

FAMILY_IDS = [family.name for family in FAMILIES]


def family(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


def tiny_critic() -> nn.Module:
    """A factory for `fastgp profile --critic critics:tiny_critic --shape 6` in the CLI tests."""
    return nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
