"""The ``triton`` implementation: each launcher of :mod:`fastgp.ops.triton.launchers` registered
once, as ``torch.library.triton_op("fastgp_triton::<name>")``, with the shared autograd formulas
of :mod:`fastgp.ops.formulas`.

On CUDA, ``torch.compile`` traces into a ``triton_op`` and sees the kernels launched through
``wrap_triton`` (flash-attention's pattern); eager calls launch them directly. The fake kernel is
the shared one of :mod:`fastgp.ops.formulas`, as for the other implementations.

Under ``TRITON_INTERPRET=1`` (the CPU tests) the kernels cannot run on the fake tensors that
tracing uses, so there the ops are kept opaque to ``torch.compile``: the functionalization step
records the op call instead of tracing into it (torch's own non-decomposing path, the one
``torch.export`` takes), the fake kernel gives the outputs' metadata, and the kernels run when
the compiled graph calls the op.
"""

from __future__ import annotations

import torch
from torch._subclasses.functional_tensor import FunctionalTensorMode

from fastgp.ops import formulas
from fastgp.ops.triton import launchers

NAMESPACE = "fastgp_triton"


def _record_without_tracing_into(mode, op, types, args, kwargs):
    return mode.__torch_dispatch__(op, types, args, kwargs)


for _name in formulas.Kernels._fields:
    _op = torch.library.triton_op(f"{NAMESPACE}::{_name}", getattr(launchers, _name),
                                  mutates_args=())
    if launchers.INTERPRETED:
        _op.register_torch_dispatch(FunctionalTensorMode, _record_without_tracing_into)

KERNELS = formulas.register(NAMESPACE)
