"""Loader of the native extension ``fastgp._C`` (C++ CPU and CUDA kernels under ``kernels/``).

Importing ``fastgp._C`` registers its ops under ``torch.ops.fastgp_native``. When the extension
was not built, fastgp runs on the other backends and :func:`load_error` says why.
"""

from __future__ import annotations

import functools
import importlib


@functools.cache
def load_error() -> str | None:
    """None when ``fastgp._C`` is importable, else the reason it is not."""
    try:
        importlib.import_module("fastgp._C")
    except ImportError as error:
        return f"fastgp._C is not built ({error})"
    return None


def has_cuda() -> bool:
    """Whether the extension was compiled with its CUDA kernels."""
    if load_error() is not None:
        return False
    import torch

    return bool(torch.ops.fastgp_native.has_cuda())
