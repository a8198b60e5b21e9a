"""Training: data, models, the WGAN trainer, metrics, run folders and plots."""

from fastgp.train.config import TrainConfig
from fastgp.train.trainer import Trainer, load_generator, sample

__all__ = ["TrainConfig", "Trainer", "load_generator", "sample"]
