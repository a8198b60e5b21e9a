"""Training: data, models, the WGAN trainer, metrics, run folders and plots."""

from fastgp.train.checkpoint import load_generator, sample
from fastgp.train.config import TrainConfig
from fastgp.train.trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "load_generator", "sample"]
