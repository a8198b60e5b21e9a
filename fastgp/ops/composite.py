"""The ``torch`` implementation: the composites of :mod:`fastgp.ops.formulas`, registered as the
custom ops ``fastgp_torch::<name>`` (schema from their annotations) with the shared fake kernels
and autograd formulas. It runs everywhere; it is the oracle the other implementations are tested
against and the fallback when they cannot run.
"""

from __future__ import annotations

import torch

from fastgp.ops import formulas

NAMESPACE = "fastgp_torch"

for _name, _formulas in formulas.FORMULAS.items():
    torch.library.custom_op(f"{NAMESPACE}::{_name}", _formulas.composite, mutates_args=())

KERNELS = formulas.register(NAMESPACE)
