"""The ``native`` implementation: the C++/CUDA extension ``fastgp._C`` (kernels under ``kernels/``).

Importing ``fastgp._C`` defines the ops ``fastgp_native::<name>`` (schemas in
``kernels/registration.cpp``, CPU kernels in ``kernels/cpu``, CUDA kernels in ``kernels/cuda``
when built with them); this module gives those same ops the shared fake kernels and autograd
formulas of :mod:`fastgp.ops.formulas`, as pytorch/extension-cpp does. When the extension was
not built, or built for another torch, fastgp runs on the other implementations and
:func:`load_error` says why. The import is tried once, when this module is imported, so that the
answer is a constant that ``torch.compile`` can read without tracing an import.

The build records the torch it compiled against in ``fastgp/_C_build.py``, readable without
loading the extension: torch's C++ ABI changes between releases, so an extension built for
another torch fails to load (undefined symbols) or, worse, loads against the wrong ABI.
"""

from __future__ import annotations

import importlib
import re

import torch

from fastgp.ops import formulas

NAMESPACE = "fastgp_native"
REBUILD = ("reinstall fastgp for this torch: pip install --no-build-isolation --force-reinstall "
           "--no-deps fastgp (from a checkout: make install)")


def _release(version: str) -> tuple[int, ...] | None:
    """``(major, minor)`` of a torch version string, None if it has none."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def load_problem(built_with: str | None, running: str, load=importlib.import_module) -> str | None:
    """Why ``fastgp._C`` cannot be used, or None once it is loaded: not built, built for a torch
    of another release than ``running`` (``built_with``, from ``_C_build.py``), or not loading."""
    if built_with is not None and _release(built_with) != _release(running):
        return f"fastgp._C was built against torch {built_with}, but torch {running} is running: {REBUILD}"
    try:
        load("fastgp._C")
    except ImportError as error:
        if built_with is None:
            return f"fastgp._C is not built ({error})"
        return f"fastgp._C (built against torch {built_with}) does not load: {error}; {REBUILD}"
    return None


def _built_with() -> str | None:
    try:
        return importlib.import_module("fastgp._C_build").TORCH_VERSION
    except ImportError:
        return None


_BUILT_WITH = _built_with()
_LOAD_ERROR = load_problem(_BUILT_WITH, torch.__version__)
#: The implementation's ops, or None when ``fastgp._C`` is not loaded.
KERNELS = formulas.register(NAMESPACE) if _LOAD_ERROR is None else None


def load_error() -> str | None:
    """None when ``fastgp._C`` is loaded, else the reason it is not."""
    return _LOAD_ERROR


def built_with() -> str | None:
    """The torch version ``fastgp._C`` was built against, None when it was not built."""
    return _BUILT_WITH


def has_cuda() -> bool:
    """Whether the extension was compiled with its CUDA kernels."""
    if _LOAD_ERROR is not None:
        return False
    return bool(torch.ops.fastgp_native.has_cuda())
