"""Toy sets follow the WGAN-GP paper's definitions; mode metrics count what they say."""

import math

import pytest
import torch

from fastgp.train.data import toy_dataset
from fastgp.train.metrics import mode_coverage


def test_eight_gaussians_definition():
    data = toy_dataset("8gaussians")
    radii = data.centres.norm(dim=1)
    assert torch.allclose(radii, torch.full((8,), 2 / 1.414))
    angles = torch.atan2(data.centres[:, 1], data.centres[:, 0]).sort().values
    assert torch.allclose(angles.diff(), torch.full((7,), math.pi / 4), atol=1e-6)
    assert data.sigma == pytest.approx(0.02 / 1.414)


def test_twenty_five_gaussians_definition():
    data = toy_dataset("25gaussians")
    assert data.num_modes == 25
    grid = sorted({round(float(v) * 2.828, 6) for v in data.centres[:, 0]})
    assert grid == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert data.sigma == pytest.approx(0.05 / 2.828)


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians"])
def test_samples_have_the_stated_spread(name):
    data = toy_dataset(name)
    samples = data.sample(200_000, torch.Generator().manual_seed(0))
    nearest = torch.cdist(samples, data.centres).argmin(dim=1)
    offsets = samples - data.centres[nearest]
    assert offsets.std().item() == pytest.approx(data.sigma, rel=0.02)
    shares = torch.bincount(nearest, minlength=data.num_modes) / samples.shape[0]
    assert torch.allclose(shares, torch.full_like(shares, 1 / data.num_modes), atol=0.01)


def test_swiss_roll_range_and_seeding():
    data = toy_dataset("swissroll")
    first = data.sample(1000, torch.Generator().manual_seed(5))
    second = data.sample(1000, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    # t ∈ [1.5π, 4.5π] so the radius t/7.5 lies in [0.63, 1.88], widened by the noise
    radius = first.norm(dim=1)
    assert radius.min() > 0.3 and radius.max() < 2.3


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'moons'"):
        toy_dataset("moons")


def test_mode_coverage_counts():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sigma = 0.1
    samples = torch.cat([
        torch.zeros(50, 2),                             # mode 0, all high quality
        torch.tensor([[10.0, 0.29]]).repeat(30, 1),     # mode 1, within 3σ = 0.3
        torch.tensor([[10.0, 0.31]]).repeat(10, 1),     # mode 1, just outside 3σ
        torch.tensor([[0.0, 10.0]]).repeat(10, 1),      # mode 2, too few to count as covered
    ])
    result = mode_coverage(samples, centres, sigma, min_share=0.5)  # threshold 0.5·100/3 ≈ 16.7
    assert result.samples_per_mode == [50, 30, 10]
    assert result.modes_covered == 2
    assert result.high_quality_share == pytest.approx(0.9)


def test_mode_coverage_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        mode_coverage(torch.zeros(5, 3), torch.zeros(2, 2), 0.1)
    with pytest.raises(ValueError, match="at least one sample"):
        mode_coverage(torch.zeros(0, 2), torch.zeros(2, 2), 0.1)
