"""The training system's optional dependencies: the ``fastgp[train]`` extra.

``pip install fastgp`` gives the penalty, the ops, the engine and the measurement tools;
``pip install 'fastgp[train]'`` adds what the trainer, its data, metrics and plots need. The
commands that need the extra check for it first and name what is missing in one line.
"""

from __future__ import annotations

import importlib.util

#: module imported -> the distribution that provides it (as ``pip install`` spells it)
TRAIN_PACKAGES = {"matplotlib": "matplotlib", "tqdm": "tqdm", "sklearn": "scikit-learn",
                  "ot": "POT", "PIL": "Pillow"}
INSTALL_TRAIN = "pip install 'fastgp[train]'"


class MissingExtraError(ImportError):
    """A command needs packages of an extra that is not installed."""


def missing_train_packages() -> list[str]:
    """The distributions of the ``train`` extra that are not installed, in pip's spelling."""
    return [package for module, package in TRAIN_PACKAGES.items() if not installed(module)]


def require_train_extra() -> None:
    """Raise :class:`MissingExtraError`, naming the missing packages, unless the ``train`` extra
    is installed: what the training commands and ``fastgp.train``'s trainer check first."""
    missing = missing_train_packages()
    if missing:
        raise MissingExtraError(f"the training extras are not installed (missing "
                                f"{', '.join(missing)}): {INSTALL_TRAIN}")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (looked up, not imported)."""
    return importlib.util.find_spec(module) is not None


def progress_bar(iterable, **options):
    """``tqdm(iterable, **options)`` where tqdm is installed (the ``train`` extra); without it,
    the iterable itself: the measurement tools run in a core install, without a bar."""
    if not installed("tqdm"):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **options)
