"""The generator and critic a training config describes, freshly initialized.

Both the trainer (a new or resumed run) and :func:`fastgp.train.checkpoint.load_generator` (a
finished run) build the models here, so that a checkpoint's weights always meet the models they
were trained in.
"""

from __future__ import annotations

from torch import nn

from fastgp.models import image_models, mlp
from fastgp.train.config import TrainConfig
from fastgp.train.initialization import initialize_


def build_models(config: TrainConfig, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """``(generator, critic)`` of a resolved config for samples of ``sample_shape``."""
    if config.architecture == "mlp":
        (dim,) = sample_shape
        generator = mlp(config.noise_dim, dim, config.hidden, config.depth)
        critic = mlp(dim, 1, config.hidden, config.depth)
    else:
        generator, critic = image_models(sample_shape, config.noise_dim, config.architecture,
                                         config.width)
    return initialize_(generator, config.init), initialize_(critic, config.init)
