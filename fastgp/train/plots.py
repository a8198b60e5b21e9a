"""Figures of a run: toy samples over the data with the critic's level sets, and training curves."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image

from fastgp.train.run_folder import atomic_write

# Figures are drawn on matplotlib.figure.Figure objects, not through pyplot: files only, no
# window, and no change of the backend of the program (a notebook) that calls these functions.


def plot_toy_samples(
    path: Path,
    real: torch.Tensor,
    fake: torch.Tensor,
    critic: Callable[[torch.Tensor], torch.Tensor] | None = None,
    title: str = "",
) -> None:
    """Scatter real (orange) and generated (blue) points; shade the critic's value behind them.

    Points of more than two dimensions are drawn by their first two; one-dimensional points as
    two histograms (:func:`plot_histograms`; the critic is not drawn then)."""
    real, fake = real.detach().cpu(), fake.detach().cpu()
    if real.shape[1] == 1:
        plot_histograms(path, real[:, 0], fake[:, 0], title)
        return
    points = torch.cat([real, fake])
    low = torch.quantile(points, 0.005, dim=0).minimum(real.min(dim=0).values) - 0.3
    high = torch.quantile(points, 0.995, dim=0).maximum(real.max(dim=0).values) + 0.3
    figure = Figure(figsize=(5.5, 5.5), dpi=110)
    axes = figure.add_subplot()
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
    _save_figure(figure, path)


def plot_histograms(path: Path, real: torch.Tensor, fake: torch.Tensor, title: str = "") -> None:
    """Histograms of real (orange) and generated (blue) values on shared bins: the figure of
    one-dimensional data, which a scatter plot cannot show."""
    values = torch.cat([real, fake]).double()
    # the range of the bulk, so that a few far outliers of the generator do not squash the bins
    low = min(torch.quantile(values, 0.005).item(), real.min().item())
    high = max(torch.quantile(values, 0.995).item(), real.max().item())
    if high <= low:  # all values equal: bins of width 1 around them
        low, high = low - 0.5, high + 0.5
    bins = torch.linspace(low, high, 61).numpy()
    figure = Figure(figsize=(5.5, 4), dpi=110)
    axes = figure.add_subplot()
    axes.hist(real.numpy(), bins=bins, density=True, alpha=0.5, color="tab:orange", label="real")
    axes.hist(fake.numpy(), bins=bins, density=True, alpha=0.5, color="tab:blue", label="generated")
    axes.set_xlabel("value")
    axes.set_ylabel("density")
    axes.legend(loc="upper right")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)


def plot_training_curves(path: Path, metrics_csv: Path) -> None:
    """Wasserstein estimate, critic and generator loss, penalty and the critic's mean gradient
    norm at interpolates against the generator step."""
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    steps = [int(row["step"]) for row in rows]
    panels = [
        ("w_estimate", "Wasserstein estimate"),
        ("critic_loss", "critic loss"),
        ("generator_loss", "generator loss"),
        ("penalty", "penalty"),
        ("grad_norm_mean", "mean ‖∇C(x̂)‖"),
    ]
    figure = Figure(figsize=(4 * len(panels), 3.2), dpi=100)
    axes = figure.subplots(1, len(panels))
    for axis, (column, label) in zip(axes, panels, strict=True):
        axis.plot(steps, [float(row[column]) for row in rows], linewidth=1)
        axis.set_title(label)
        axis.set_xlabel("generator step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    _save_figure(figure, path)


def _save_figure(figure, path: Path) -> None:
    """PNG of ``figure`` written atomically (a link at ``path`` is replaced, not followed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write(Path(path), lambda handle: handle.write(buffer.getvalue()))


def save_image_grid(
    path: Path, images: torch.Tensor, nrow: int | None = None, scale: int | None = None
) -> None:
    """Write images (N, C, H, W) in [-1, 1], C = 1 (grey) or 3 (RGB), as one PNG grid.

    Tiles fill rows of ``nrow`` tiles (default ``ceil(sqrt(N))``) left to right, each upscaled by
    ``scale`` with nearest-neighbour sampling (default: the smallest factor that makes a tile at
    least 32 px, so 8×8 digits are drawn at 4×) and framed by 2 px grey (128) borders. A pixel
    value ``x`` is stored as ``round((x + 1) / 2 * 255)``; values outside [-1, 1] are clipped.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 1 and C in (1, 3), "
                         f"got {tuple(images.shape)}")
    count, channels, height, width = images.shape
    if nrow is None:
        nrow = math.isqrt(count - 1) + 1
    if scale is None:
        scale = max(1, -(-32 // max(height, width)))
    if nrow < 1 or scale < 1:
        raise ValueError(f"nrow and scale must be >= 1, got nrow={nrow}, scale={scale}")
    pixels = images.detach().cpu().float()
    if not torch.isfinite(pixels).all():
        raise ValueError("images contain NaN or infinite values")
    pixels = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    border, tile_height, tile_width = 2, height * scale, width * scale
    columns, rows = min(nrow, count), -(-count // nrow)
    # Grey borders (and empty slots) stand out against both black and white image backgrounds.
    grid = torch.full((channels, border + rows * (tile_height + border),
                       border + columns * (tile_width + border)), 128, dtype=torch.uint8)
    for index in range(count):
        top = border + (index // nrow) * (tile_height + border)
        left = border + (index % nrow) * (tile_width + border)
        grid[:, top:top + tile_height, left:left + tile_width] = pixels[index]
    array = grid[0].numpy() if channels == 1 else grid.permute(1, 2, 0).contiguous().numpy()
    picture = Image.fromarray(array)  # uint8 (H, W) → "L", (H, W, 3) → "RGB"
    atomic_write(Path(path), lambda handle: picture.save(handle, format="PNG"))
