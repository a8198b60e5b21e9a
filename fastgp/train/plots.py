"""Figures of a run: toy samples over the data with the critic's level sets, and training curves."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_toy_samples(
    path: Path,
    real: torch.Tensor,
    fake: torch.Tensor,
    critic: Callable[[torch.Tensor], torch.Tensor] | None = None,
    title: str = "",
) -> None:
    """Scatter real (orange) and generated (blue) points; shade the critic's value behind them."""
    real, fake = real.detach().cpu(), fake.detach().cpu()
    points = torch.cat([real, fake])
    low = torch.quantile(points, 0.005, dim=0).minimum(real.min(dim=0).values) - 0.3
    high = torch.quantile(points, 0.995, dim=0).maximum(real.max(dim=0).values) + 0.3
    figure, axes = plt.subplots(figsize=(5.5, 5.5), dpi=110)
    if critic is not None:
        xs = torch.linspace(float(low[0]), float(high[0]), 160)
        ys = torch.linspace(float(low[1]), float(high[1]), 160)
        grid_x, grid_y = torch.meshgrid(xs, ys, indexing="xy")
        grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
        with torch.no_grad():
            values = critic(grid).reshape(grid_x.shape)
        contour = axes.contourf(grid_x, grid_y, values, levels=20, cmap="Greys", alpha=0.6)
        figure.colorbar(contour, ax=axes, fraction=0.046, pad=0.04, label="critic value")
    axes.scatter(real[:, 0], real[:, 1], s=2, c="tab:orange", alpha=0.5, label="real")
    axes.scatter(fake[:, 0], fake[:, 1], s=2, c="tab:blue", alpha=0.5, label="generated")
    axes.set_xlim(float(low[0]), float(high[0]))
    axes.set_ylim(float(low[1]), float(high[1]))
    axes.set_aspect("equal")
    axes.legend(loc="upper right", markerscale=4)
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_training_curves(path: Path, metrics_csv: Path) -> None:
    """Critic loss, generator loss, Wasserstein estimate and penalty against the generator step."""
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    steps = [int(row["step"]) for row in rows]
    panels = [
        ("w_estimate", "Wasserstein estimate"),
        ("critic_loss", "critic loss"),
        ("generator_loss", "generator loss"),
        ("penalty", "gradient penalty"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), dpi=100)
    for axis, (column, label) in zip(axes, panels, strict=True):
        axis.plot(steps, [float(row[column]) for row in rows], linewidth=1)
        axis.set_title(label)
        axis.set_xlabel("generator step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
