"""Training: data, models, the WGAN trainer, metrics, run folders and plots.

Needs the ``fastgp[train]`` extra (matplotlib, POT, Pillow, scikit-learn, tqdm), except for
:class:`TrainConfig`: the command line builds its flags from it in any install. The other names
load on first use (PEP 562), so that importing a light module of this package (the config, the
run folder) does not import the training system's libraries.
"""

import importlib
from typing import TYPE_CHECKING

from fastgp.extras import require_train_extra
from fastgp.train.config import TrainConfig

if TYPE_CHECKING:
    from fastgp.train.checkpoint import load_generator, sample
    from fastgp.train.trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "load_generator", "sample"]

_LAZY = {"Trainer": "fastgp.train.trainer", "load_generator": "fastgp.train.checkpoint",
         "sample": "fastgp.train.checkpoint"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_train_extra()  # one message naming every missing package, not the first one
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
