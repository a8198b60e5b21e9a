"""The WGAN-GP paper's 2-D toy distributions, sampled on demand.

Definitions follow the paper's released toy code (Gulrajani et al. 2017):

- ``8gaussians``: centres at radius 2 on the 8 compass directions, σ = 0.02, all divided by 1.414;
- ``25gaussians``: a 5×5 grid of centres with spacing 2 (−4 … 4), σ = 0.05, all divided by 2.828;
- ``swissroll``: scikit-learn's swiss roll (noise 0.25), its (x, z) plane, divided by 7.5.

Sampling draws from the exact mixture (uniform over modes) with a ``torch.Generator``, so a seed
fixes the data stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ToyDataset:
    """A 2-D mixture of isotropic gaussians; ``centres`` (K, 2) and ``sigma`` after scaling."""

    name: str
    centres: torch.Tensor
    sigma: float

    @property
    def num_modes(self) -> int:
        return self.centres.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples, float32, shape ``(n, 2)``."""
        modes = torch.randint(0, self.num_modes, (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator)
        return self.centres[modes] + self.sigma * noise


@dataclass(frozen=True)
class SwissRoll:
    """The paper's swiss roll: no discrete modes, so only distances to it are measured."""

    name: str = "swissroll"
    noise: float = 0.25
    scale: float = 7.5

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # scikit-learn's make_swiss_roll: t = 1.5π(1 + 2u), point (t cos t, t sin t) + noise,
        # drawn here with torch so that the stream follows the run's generator.
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
        points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
        points = points + self.noise * torch.randn(n, 2, generator=generator)
        return points / self.scale


def eight_gaussians() -> ToyDataset:
    diagonal = 1.0 / math.sqrt(2)
    directions = torch.tensor(
        [
            [1, 0], [-1, 0], [0, 1], [0, -1],
            [diagonal, diagonal], [diagonal, -diagonal], [-diagonal, diagonal],
            [-diagonal, -diagonal],
        ],
        dtype=torch.float32,
    )
    return ToyDataset("8gaussians", 2.0 * directions / 1.414, 0.02 / 1.414)


def twenty_five_gaussians() -> ToyDataset:
    grid = torch.arange(-2, 3, dtype=torch.float32) * 2.0
    centres = torch.cartesian_prod(grid, grid)
    return ToyDataset("25gaussians", centres / 2.828, 0.05 / 2.828)


TOY_DATASETS = {
    "8gaussians": eight_gaussians,
    "25gaussians": twenty_five_gaussians,
    "swissroll": SwissRoll,
}
# The data sets fastgp has built in: the toy sets and scikit-learn's digits (fastgp.train.image_data).
BUILTIN_DATASETS: tuple[str, ...] = (*TOY_DATASETS, "digits")


def toy_dataset(name: str) -> ToyDataset | SwissRoll:
    """The toy set called ``name`` (one of ``TOY_DATASETS``)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name]()
