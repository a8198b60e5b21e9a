"""The exponential moving average of the generator's weights used for samples and metrics.

After generator step t (t = 1, 2, …) the average is ``θ̄₁ = θ₁`` and ``θ̄ₜ = dₜ·θ̄ₜ₋₁ + (1 − dₜ)·θₜ``
with ``dₜ = min(d, (1 + n)/(10 + n))``, n = t − 1 the number of updates averaged so far. The
warm-up of ``dₜ`` keeps the average of a short run (or an early evaluation) from being dominated
by the random initial weights: with d = 0.999 and no warm-up, the average after 300 steps still
holds 74% of the initialization. Buffers (BatchNorm statistics) are averaged alike; integer
buffers (batch counters) are copied.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def _warmed_up_ema(decay: float):
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               num_averaged: torch.Tensor) -> None:
        # A tensor expression: no host sync per step on an accelerator.
        step_decay = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay)
        for average, value in zip(averaged, current, strict=True):
            if average.is_floating_point():
                average.lerp_(value, (1 - step_decay).to(average.dtype))
            else:
                average.copy_(value)

    return update


def generator_average(generator: nn.Module, decay: float) -> AveragedModel:
    """An :class:`~torch.optim.swa_utils.AveragedModel` of ``generator`` updated by the warmed-up
    EMA above; call ``update_parameters(generator)`` after every generator step."""
    if not 0 < decay < 1:
        raise ValueError(f"decay must lie in (0, 1), got {decay}")
    return AveragedModel(generator, multi_avg_fn=_warmed_up_ema(decay), use_buffers=True)
