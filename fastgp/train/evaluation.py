"""Evaluating a run at a step: sample quality on a fixed batch, its figure, and the penalty's share
of a critic step's time.

Every evaluation of a run measures the same fixed noise batch against the same fixed real
batches (:class:`FixedBatches`), so that evaluations differ only by the model. The metrics depend
on what the data allow to measure (:data:`EVALUATION_COLUMNS`): EMD against real data for vector
data, mode coverage on the toy sets too, class balance and Fréchet distance for digits.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fastgp.train.config import TrainConfig
from fastgp.train.data import ToyDataset
from fastgp.train.image_metrics import DigitsClassifier, digits_classifier, digits_quality
from fastgp.train.metrics import earth_movers_distance, mode_coverage
from fastgp.train.objectives import Objectives
from fastgp.train.plots import plot_toy_samples, save_image_grid

# Columns of evaluations.csv by what the data allow to measure.
EVALUATION_COLUMNS = {
    "toy": ["step", "modes_covered", "num_modes", "high_quality_share", "emd", "emd_floor",
            "penalty_share", "seconds"],
    "vector": ["step", "emd", "emd_floor", "penalty_share", "seconds"],
    "digits": ["step", "classes_present", "min_class_share", "max_class_share",
               "frechet_distance", "frechet_floor", "penalty_share", "seconds"],
    "image": ["step", "penalty_share", "seconds"],
}
GRID_IMAGES = 64  # generated images shown per evaluation grid
PENALTY_SHARE_REPEATS = 5


def evaluation_columns(config: TrainConfig, kind: str) -> list[str]:
    """The columns of ``evaluations.csv`` for a run of ``config`` on data of ``kind``."""
    return EVALUATION_COLUMNS["digits" if config.dataset == "digits" else kind]


@dataclass
class FixedBatches:
    """What every evaluation of a run measures: one noise batch and, for non-image data, two real
    batches (the second gives the EMD floor, the distance between two real samples). The floor
    and the digits classifier are made at the first evaluation that needs them, then kept."""

    noise: torch.Tensor
    real: torch.Tensor | None = None
    real_other: torch.Tensor | None = None
    _emd_floor: float | None = field(default=None, repr=False)
    _classifier: DigitsClassifier | None = field(default=None, repr=False)

    def emd_floor(self) -> float:
        if self._emd_floor is None:
            self._emd_floor = earth_movers_distance(self.real_other, self.real)
        return self._emd_floor

    def classifier(self) -> DigitsClassifier:
        if self._classifier is None:
            self._classifier = digits_classifier()
        return self._classifier


def fixed_batches(data, kind: str, config: TrainConfig) -> FixedBatches:
    """The fixed batches of a run, drawn from their own stream (seed + 2) so that they are the
    same in every run of a seed, resumed or not, and never shift the training streams."""
    stream = torch.Generator().manual_seed(config.seed + 2)
    noise = torch.randn(config.eval_samples, config.noise_dim, generator=stream)
    if kind == "image":  # images are measured against the classifier's own real halves
        return FixedBatches(noise)
    real = data.sample(config.eval_samples, stream)
    return FixedBatches(noise, real, data.sample(config.eval_samples, stream))


@torch.no_grad()
def sample_quality(*, sampler: nn.Module, critic: nn.Module, batches: FixedBatches, data,
                   kind: str, dataset: str, sample_shape: tuple[int, ...],
                   device: torch.device, step: int, figure: Path) -> dict:
    """``{"step": step, ...}`` with the quality metrics of ``sampler``'s samples of the fixed
    noise batch, and their figure at ``figure``: the samples over the real batch (with the
    critic's level sets for 2-D data), or an image grid."""
    sampler.eval()
    samples = sampler(batches.noise.to(device)).cpu()
    sampler.train()
    metrics: dict = {"step": step}
    title = f"{dataset}, step {step}"
    if kind == "image":
        if dataset == "digits":
            metrics |= digits_quality(samples, batches.classifier())
        save_image_grid(figure, samples[:GRID_IMAGES])
        return metrics
    floor = batches.emd_floor()
    metrics["emd"] = earth_movers_distance(samples, batches.real)
    metrics["emd_floor"] = floor
    if isinstance(data, ToyDataset):
        metrics |= mode_coverage(samples, data.centres, data.sigma).as_dict()
        title += (f": {metrics['modes_covered']}/{metrics['num_modes']} modes, "
                  f"{100 * metrics['high_quality_share']:.1f}% high quality")
    # The critic's level sets are drawn where the data are 2-D.
    levels: Callable[[torch.Tensor], torch.Tensor] | None = None
    if sample_shape == (2,):
        levels = lambda points: critic(points.to(device)).cpu()  # noqa: E731
    plot_toy_samples(figure, batches.real, samples, levels, title)
    return metrics


def penalty_share(objectives: Objectives, batch: tuple[torch.Tensor, torch.Tensor] | None,
                  rng: torch.Generator, device: torch.device) -> float:
    """Share of a critic step's time spent on the penalty: ``1 − t(no penalty) / t(penalty)``,
    medians of interleaved repeats on ``batch`` (the last training batch, real and fake); 0
    without a penalty or before any step. ``rng`` is the diagnostics' own stream, so that the
    measurement never changes the training run."""
    if objectives.penalty == "none" or batch is None:
        return 0.0
    real, fake = batch
    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.enable_grad():  # the steps measured are training steps (an evaluation runs without)
        for repeat in range(PENALTY_SHARE_REPEATS + 1):
            for with_penalty in (True, False):
                begin = time.perf_counter()
                objectives.critic_step(real, fake, with_penalty, rng=rng)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if repeat:  # the first round warms up
                    times[with_penalty].append(time.perf_counter() - begin)
    # The gradients left behind are overwritten by the next training step.
    return max(0.0, 1.0 - statistics.median(times[False]) / statistics.median(times[True]))
