"""fastgp: fast, exact gradient penalties and a WGAN-GP training system.

``import fastgp`` loads the penalty, the ops, the engine and the losses only. The measurement
tools (:mod:`fastgp.perf.profile`, :mod:`fastgp.perf.counting`: torch's private dispatch
machinery; :mod:`fastgp.perf.explain`), the benchmark, the trainer and their plotting and data
libraries load when first asked for:
the names of :data:`_LAZY` are found through the module's ``__getattr__`` (PEP 562).
"""

import importlib
from typing import TYPE_CHECKING

from fastgp import ops
from fastgp._version import __version__
from fastgp.engine import CriticStep, FusedCritic, UnsupportedLayerError
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

if TYPE_CHECKING:  # what type checkers and editors see; at run time these load on first use
    from fastgp.perf.explain import Explanation, explain
    from fastgp.perf.profile import profile_gp

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

# Public names whose modules load on first use: the name -> the module that defines it.
_LAZY = {
    "Explanation": "fastgp.perf.explain",
    "explain": "fastgp.perf.explain",
    "profile_gp": "fastgp.perf.profile",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
