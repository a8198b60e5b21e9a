"""fastgp: fast, exact gradient penalties and a WGAN-GP training system."""

from fastgp import ops
from fastgp._version import __version__
from fastgp.engine import CriticStep, FusedCritic, UnsupportedLayerError
from fastgp.engine.explain import Explanation, explain
from fastgp.losses import (
    clip_weights_,
    critic_wasserstein_loss,
    discriminator_bce_loss,
    generator_minimax_loss,
    generator_nonsaturating_loss,
    generator_wasserstein_loss,
    wasserstein_estimate,
)
from fastgp.ops import (
    BACKENDS,
    bias_leaky_relu,
    get_backend,
    interpolate,
    norm_penalty,
    set_backend,
)
from fastgp.penalty import dragan_penalty, gradient_penalty, r1_penalty
from fastgp.profile import profile_gp

__all__ = [
    "BACKENDS",
    "CriticStep",
    "Explanation",
    "FusedCritic",
    "UnsupportedLayerError",
    "__version__",
    "bias_leaky_relu",
    "get_backend",
    "set_backend",
    "clip_weights_",
    "critic_wasserstein_loss",
    "discriminator_bce_loss",
    "dragan_penalty",
    "explain",
    "generator_minimax_loss",
    "generator_nonsaturating_loss",
    "generator_wasserstein_loss",
    "gradient_penalty",
    "interpolate",
    "norm_penalty",
    "ops",
    "profile_gp",
    "r1_penalty",
    "wasserstein_estimate",
]
