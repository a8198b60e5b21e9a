"""The exponential moving average of the generator's weights used for samples and metrics.

After generator step t (t = 1, 2, …) the average is ``θ̄₁ = θ₁`` and ``θ̄ₜ = dₜ·θ̄ₜ₋₁ + (1 − dₜ)·θₜ``
with ``dₜ = min(d, (1 + n)/(10 + n))``, n = t − 1 the number of updates averaged so far. The
warm-up of ``dₜ`` keeps the average of a short run (or an early evaluation) from being dominated
by the random initial weights: with d = 0.999 and no warm-up, the average after 300 steps still
holds 74% of the initialization. Buffers (BatchNorm statistics) are averaged alike; integer
buffers (batch counters) are copied.

An update is device work only, with no host sync: PyTorch's ``AveragedModel.update_parameters``
reads its step counter on the host twice per update (``bool(n_averaged == 0)``,
``n_averaged > 0``) and keeps it in host memory, copied to the device at every update.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class GeneratorAverage(AveragedModel):
    """An :class:`~torch.optim.swa_utils.AveragedModel` (same ``state_dict``: ``module.*`` and
    ``n_averaged``) updated by the warmed-up EMA above; call ``update_parameters(generator)``
    after every generator step."""

    def __init__(self, generator: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        super().__init__(generator, use_buffers=True)
        self.decay = decay
        # The counter lives with the weights, so that the update never leaves the device.
        self.n_averaged = self.n_averaged.to(next(generator.parameters()).device)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Average ``model``'s current parameters and buffers into this one."""
        count = self.n_averaged
        step_decay = torch.clamp((1 + count) / (10 + count), max=self.decay)
        # The first update copies (θ̄₁ = θ₁) without a branch on the host: lerp with weight 1
        # computes end − (end − start)·0, exactly ``end``.
        weight = torch.where(count == 0, 1.0, 1 - step_decay)
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*model.parameters(), *model.buffers()]
        for average, value in zip(averaged, current, strict=True):
            if average.is_floating_point():
                average.lerp_(value.detach(), weight.to(average.dtype))
            else:
                average.copy_(value)
        self.n_averaged.add_(1)


def generator_average(generator: nn.Module, decay: float) -> GeneratorAverage:
    """The weight average of ``generator`` with decay ``d`` (see the module's docstring)."""
    return GeneratorAverage(generator, decay)
