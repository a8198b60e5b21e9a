"""The op contract (fastgp/ops/README.md), checked for every case of ``tests/op_cases.py`` on
every implementation this machine runs (Triton through its interpreter):

- values equal the op's formula in fp64, for every input layout and mix of layouts;
- the real and the fake kernel return the same shapes, dtypes and strides, and the strides are
  the layout rule's (fastgp/ops/_layout.py, mirrored in kernels/include/fastgp/host.h): under
  ``torch.compile`` the fake strides are what Inductor plans for and asserts;
- ``torch.library.opcheck`` passes (schema, fake tensor, autograd registration, AOT dispatch);
- gradcheck and gradgradcheck pass for ops with an autograd formula;
- tensor arguments on different devices are refused, by the fake and by the real op (a second
  device here is ``meta``: a call with one ``meta`` argument dispatches to the fake, a
  redispatch to the CPU key runs the real op with the same arguments);
- samples of zero elements give empty outputs (and norm 0).
"""

import pytest
import torch
from backends import BACKENDS, implementation
from helpers import FP64_TOL, relative_error
from op_cases import CASES, LAYOUTS, small_differentiable_call
from torch._subclasses.fake_tensor import FakeTensorMode

from fastgp.ops import Kernels
from fastgp.ops._checks import check_same_device
from fastgp.ops._layout import is_sample_major, output_like

META = torch.device("meta")
CPU_ONLY = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
EVERY_LAYOUT = [(case, layouts) for case in CASES for layouts in case.layout_choices()]


def _id(value):
    if isinstance(value, tuple):
        return "+".join(value)
    return getattr(value, "name", None)


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _op(case, backend):
    return getattr(implementation(backend), case.name)


def test_every_op_has_a_case():
    assert sorted(case.name for case in CASES) == sorted(Kernels._fields)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, layouts", EVERY_LAYOUT, ids=_id)
def test_values_equal_the_formula(case, layouts, backend):
    arguments = case.call(layouts)
    outputs = _outputs(_op(case, backend)(*arguments))
    expected = _outputs(case.formula(*arguments))
    for out, want in zip(outputs, expected, strict=True):
        if want.dtype == torch.bool:
            assert out.dtype == torch.bool and torch.equal(out, want)
        else:
            assert relative_error(out, want) <= FP64_TOL


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, layouts", EVERY_LAYOUT, ids=_id)
def test_real_and_fake_strides_agree(case, layouts, backend):
    op = _op(case, backend).default
    arguments = case.call(layouts)
    real = _outputs(op(*arguments))
    with FakeTensorMode() as mode:
        fake = _outputs(op(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                             for a in arguments)))
    for real_out, fake_out in zip(real, fake, strict=True):
        assert (real_out.shape, real_out.dtype) == (fake_out.shape, fake_out.dtype)
        assert real_out.stride() == fake_out.stride(), (real_out.stride(), fake_out.stride())
    if case.name != "norm_penalty":  # (scalar, (B,)) outputs have a single layout
        # and the layout is the rule's: the first input's when sample-major, else contiguous
        first = arguments[0]
        assert all(out.stride() == output_like(first).stride() for out in real)
        if is_sample_major(first):
            assert real[0].stride() == first.stride()
        else:
            assert real[0].is_contiguous()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_opcheck_every_layout(case, backend):
    op = _op(case, backend).default
    for layouts in case.layout_choices(every_pair=False):
        torch.library.opcheck(op, case.call(layouts, requires_grad=case.differentiable))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [case for case in CASES if case.differentiable], ids=_id)
def test_gradcheck_and_gradgradcheck(case, backend):
    op = _op(case, backend)
    arguments = small_differentiable_call(case)
    tensors = [i for i, a in enumerate(arguments) if isinstance(a, torch.Tensor) and a.requires_grad]

    def call(*differentiated):
        full = list(arguments)
        for index, value in zip(tensors, differentiated, strict=True):
            full[index] = value
        # the differentiable outputs (a mask is a bool output: nothing to differentiate)
        return tuple(out for out in _outputs(op(*full)) if out.is_floating_point())

    inputs = tuple(arguments[i] for i in tensors)
    assert torch.autograd.gradcheck(call, inputs)
    assert torch.autograd.gradgradcheck(call, inputs)


def _device_cases():
    """(case, index of a tensor argument to move to ``meta``) for ops with two or more tensor
    arguments (with one, moving it moves every tensor: nothing is mixed)."""
    found = []
    for case in CASES:
        arguments = case.call(("contiguous",) * len(case.inputs))
        positions = [i for i, a in enumerate(arguments) if isinstance(a, torch.Tensor)]
        if len(positions) > 1:
            found += [(case, position) for position in positions]
    return found


def _moved(case, position):
    arguments = list(case.call(("contiguous",) * len(case.inputs)))
    arguments[position] = arguments[position].to(META)
    return arguments


def _argument_name(case, position, backend):
    return _op(case, backend).default._schema.arguments[position].name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, position", _device_cases(), ids=str)
def test_fake_refuses_mixed_devices(case, position, backend):
    name = _argument_name(case, position, backend)
    with pytest.raises(ValueError, match=rf"{case.name}: every tensor argument must be on the "
                                         rf"same device, got .*{name} on meta"):
        _op(case, backend)(*_moved(case, position))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, position", _device_cases(), ids=str)
def test_real_op_refuses_mixed_devices(case, position, backend):
    op = _op(case, backend).default
    arguments = case.call(("contiguous",) * len(case.inputs))
    first = _outputs(op.redispatch(CPU_ONLY, *arguments))[0]  # the real op: real values
    assert torch.isfinite(first).all()
    name = _argument_name(case, position, backend)
    with pytest.raises(ValueError, match=rf"{name} on meta"):
        op.redispatch(CPU_ONLY, *_moved(case, position))


def test_check_same_device_names_every_tensor():
    cpu, meta = torch.zeros(2), torch.zeros(2, device=META)
    with pytest.raises(ValueError, match=r"^op: every tensor argument must be on the same "
                                         r"device, got a on cpu, b on meta, c on cpu$"):
        check_same_device("op", a=cpu, b=meta, c=cpu)
    check_same_device("op", a=cpu, b=None, c=cpu)  # None: an absent optional argument
    check_same_device("op", a=meta, b=meta)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("shape, layout", [((3, 0), None), ((2, 4, 0), None),
                                           ((2, 0, 3, 3), torch.channels_last)])
def test_samples_without_elements(case, shape, layout, backend):
    """Every op returns empty outputs for samples of zero elements, and norm 0 (Triton's
    reduction plan divided by zero here once, the native CPU kernel died of SIGFPE)."""
    inputs = []
    for name in case.inputs:
        empty = torch.zeros(shape, dtype=torch.bool if name == "mask" else torch.float64)
        inputs.append(empty if layout is None else empty.to(memory_format=layout))
    arguments = case.arguments(*inputs)
    if case.name == "norm_penalty_backward":  # norms of empty samples are 0, not nan
        arguments = (arguments[0], torch.zeros(shape[0], dtype=torch.float64), *arguments[2:])
    outputs = _outputs(_op(case, backend)(*arguments))
    if case.name == "norm_penalty":
        penalty, norms = outputs
        assert torch.equal(norms, torch.zeros(shape[0], dtype=torch.float64))
        assert penalty.item() == 10.0  # λ · mean((0 − c)²)
    else:
        assert all(out.shape == shape for out in outputs)


def test_layouts_cover_sample_major_and_not():
    assert {is_sample_major(LAYOUTS[name][1](torch.zeros(LAYOUTS[name][0])))
            for name in LAYOUTS} == {True, False}
