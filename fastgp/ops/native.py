"""Loader of the native extension ``fastgp._C`` (C++ CPU and CUDA kernels under ``kernels/``).

Importing ``fastgp._C`` registers its ops under ``torch.ops.fastgp_native``. When the extension
was not built, fastgp runs on the other backends and :func:`load_error` says why. The import is
tried once, when this module is imported, so that the answer is a constant that
``torch.compile`` can read without tracing an import.
"""

from __future__ import annotations

import importlib


def _try_import() -> str | None:
    try:
        importlib.import_module("fastgp._C")
    except ImportError as error:
        return f"fastgp._C is not built ({error})"
    return None


_LOAD_ERROR = _try_import()


def load_error() -> str | None:
    """None when ``fastgp._C`` is loaded, else the reason it is not."""
    return _LOAD_ERROR


def has_cuda() -> bool:
    """Whether the extension was compiled with its CUDA kernels."""
    if _LOAD_ERROR is not None:
        return False
    import torch

    return bool(torch.ops.fastgp_native.has_cuda())
