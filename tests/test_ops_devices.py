"""Every fastgp op refuses tensor arguments on different devices, on every backend.

The check runs in the real op and in its fake alike: in Python (fastgp/ops/_checks.py) for the
composite and Triton ops and every fake kernel, in C++ (kernels/include/fastgp/arguments.h) for
the native CPU and CUDA kernels (the CUDA ones compiled, not run, here). On a CPU-only
machine a second device is ``meta``: a call with one ``meta`` argument dispatches to the fake
kernel (which returned an uninitialized CPU tensor before the check), and a redispatch to the
CPU key runs the real op with the same arguments.
"""

import pytest
import torch
from backends import BACKENDS, implementation

from fastgp.ops._checks import check_same_device

META = torch.device("meta")
CPU_ONLY = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)


def _random(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _calls():
    """``(op, tensor arguments by name, trailing scalar arguments)`` of every fastgp op."""
    x, eps = _random((3, 4), 1), torch.rand(3, dtype=torch.float64)
    norms = x.norm(dim=1)
    scalar = torch.tensor(1.0, dtype=torch.float64)
    return [
        ("interpolate", {"real": x, "fake": _random((3, 4), 2), "eps": eps}, ()),
        ("interpolate_backward", {"grad": x, "eps": eps}, ()),
        ("norm_penalty_backward", {"grad": x, "norms": norms, "grad_penalty": scalar,
                                   "grad_norms": norms}, (10.0, 1.0, False)),
        ("bias_leaky_relu", {"x": x, "bias": _random((4,), 3)}, (0.2, 1)),
        ("leaky_relu_mask_backward", {"grad": x, "mask": x > 0}, (0.2,)),
    ]


CASES = [(op, name) for op, tensors, _ in _calls() for name in tensors]


def _arguments(op_name, moved):
    tensors, scalars = next((tensors, scalars) for op, tensors, scalars in _calls()
                            if op == op_name)
    return [value.to(META) if name == moved else value for name, value in tensors.items()], scalars


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op_name, moved", CASES)
def test_fake_refuses_mixed_devices(op_name, moved, backend):
    tensors, scalars = _arguments(op_name, moved)
    with pytest.raises(ValueError, match=rf"{op_name}: every tensor argument must be on "
                                         rf"the same device, got .*{moved} on meta"):
        getattr(implementation(backend), op_name)(*tensors, *scalars)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op_name, moved", CASES)
def test_real_op_refuses_mixed_devices(op_name, moved, backend):
    op = getattr(implementation(backend), op_name).default
    tensors, scalars = _arguments(op_name, moved=None)
    result = op.redispatch(CPU_ONLY, *tensors, *scalars)  # the real op: real values
    first = result[0] if isinstance(result, tuple) else result
    assert torch.isfinite(first).all()
    tensors, scalars = _arguments(op_name, moved)
    with pytest.raises(ValueError, match=rf"{moved} on meta"):
        op.redispatch(CPU_ONLY, *tensors, *scalars)


def test_check_same_device_names_every_tensor():
    cpu, meta = torch.zeros(2), torch.zeros(2, device=META)
    with pytest.raises(ValueError, match=r"^op: every tensor argument must be on the same "
                                         r"device, got a on cpu, b on meta, c on cpu$"):
        check_same_device("op", a=cpu, b=meta, c=cpu)
    check_same_device("op", a=cpu, b=None, c=cpu)  # None: an absent optional argument
    check_same_device("op", a=meta, b=meta)
