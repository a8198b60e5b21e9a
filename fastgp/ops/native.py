"""The ``native`` implementation: the C++/CUDA extension ``fastgp._C`` (kernels under ``kernels/``).

Importing ``fastgp._C`` defines the ops ``fastgp_native::<name>`` (schemas in
``kernels/registration.cpp``, CPU kernels in ``kernels/cpu``, CUDA kernels in ``kernels/cuda``
when built with them); this module gives those same ops the shared fake kernels and autograd
formulas of :mod:`fastgp.ops.formulas`, as pytorch/extension-cpp does. When the extension was
not built, fastgp runs on the other implementations and :func:`load_error` says why. The import
is tried once, when this module is imported, so that the answer is a constant that
``torch.compile`` can read without tracing an import.
"""

from __future__ import annotations

import importlib

from fastgp.ops import formulas

NAMESPACE = "fastgp_native"


def _try_import() -> str | None:
    try:
        importlib.import_module("fastgp._C")
    except ImportError as error:
        return f"fastgp._C is not built ({error})"
    return None


_LOAD_ERROR = _try_import()
#: The implementation's ops, or None when ``fastgp._C`` is not loaded.
KERNELS = formulas.register(NAMESPACE) if _LOAD_ERROR is None else None


def load_error() -> str | None:
    """None when ``fastgp._C`` is loaded, else the reason it is not."""
    return _LOAD_ERROR


def has_cuda() -> bool:
    """Whether the extension was compiled with its CUDA kernels."""
    if _LOAD_ERROR is not None:
        return False
    import torch

    return bool(torch.ops.fastgp_native.has_cuda())
