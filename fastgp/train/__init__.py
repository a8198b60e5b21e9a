"""Training: toy data, models, the WGAN-GP trainer, metrics, run folders and plots."""

from fastgp.train.trainer import TrainConfig, Trainer, load_generator, sample

__all__ = ["TrainConfig", "Trainer", "load_generator", "sample"]
