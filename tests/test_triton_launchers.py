"""Host-side logic of the Triton launchers that the GPU depends on, checked on the CPU.

- Device guard: every launch runs inside ``device_guard(tensor.device)``. Here the guard's
  construction for a CUDA device and its use around every launch are checked (with CPU tensors
  under the interpreter, where the guard itself is empty); making the device current and
  Triton picking that device's stream need a GPU.
- Split bounds of the norm reduction in int64: the kernel's own ``split_bounds`` runs in the
  interpreter, which computes in the kernel's integer types (int32 wraps as on the GPU).
- SM count: asked of the device (a mocked ``get_device_properties``), a fixed fallback off CUDA.
"""

import contextlib
import types

import pytest
import torch
from backends import AVAILABLE
from helpers import FP64_TOL, relative_error
from op_cases import CASES

pytestmark = pytest.mark.skipif("triton" not in AVAILABLE, reason="Triton interpreter unavailable")

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")


@pytest.fixture(scope="module")
def launchers():
    from fastgp.ops.triton import launchers

    return launchers


def _random(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- device guard


def test_device_guard_makes_the_tensors_cuda_device_current(launchers):
    guard = launchers.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1  # built without touching CUDA
    assert isinstance(launchers.device_guard(torch.device("cpu")), contextlib.nullcontext)


def _launch_calls(launchers):
    """Every launcher once, on small CPU tensors (the interpreter): one per op case."""
    return [(case.name, lambda case=case: getattr(launchers, case.name)(*case.call(
        ("contiguous",) * len(case.inputs)))) for case in CASES]


def test_every_launch_runs_inside_the_device_guard(launchers, monkeypatch):
    events = []

    @contextlib.contextmanager
    def recording_guard(device):
        events.append(("enter", device))
        yield
        events.append(("exit", device))

    real_launch = launchers._launch

    def recording_launch(kernel):
        launch = real_launch(kernel)

        class Grid:
            def __getitem__(self, grid):
                def run(*args, **kwargs):
                    events.append(("launch", kernel.fn.__name__))
                    return launch[grid](*args, **kwargs)
                return run
        return Grid()

    monkeypatch.setattr(launchers, "device_guard", recording_guard)
    monkeypatch.setattr(launchers, "_launch", recording_launch)
    for name, call in _launch_calls(launchers):
        before = len(events)
        call()
        assert any(event[0] == "launch" for event in events[before:]), f"{name} launched nothing"
    cpu = torch.device("cpu")
    for index, event in enumerate(events):
        if event[0] == "launch":
            assert events[index - 1] == ("enter", cpu) and events[index + 1] == ("exit", cpu)


# ----------------------------------------------------------------------------- int64 split bounds


@triton.jit
def _split_bounds_probe(out_ptr, chunk, sample_size):
    from fastgp.ops.triton.kernels import split_bounds

    split = tl.program_id(0)  # int32, as in the reduction kernel
    begin, end = split_bounds(split, chunk, sample_size)
    tl.store(out_ptr + 2 * split, begin)
    tl.store(out_ptr + 2 * split + 1, end)


@pytest.mark.parametrize("sample_size", [70_000, 2**31 - 1, 2**31 + 1, 3 * 2**31 + 5])
def test_split_bounds_tile_samples_of_2_to_the_31_elements_and_more(launchers, sample_size):
    _, _, chunk, n_splits = launchers.reduction_plan(1, sample_size, launchers.FALLBACK_SM_COUNT)
    assert chunk < 2**31  # passed as int32: the product with the split index is what wraps
    bounds = torch.zeros(n_splits, 2, dtype=torch.int64)
    _split_bounds_probe[(n_splits,)](bounds, chunk, sample_size)
    begins, ends = bounds[:, 0].tolist(), bounds[:, 1].tolist()
    assert begins[0] == 0 and ends[-1] == sample_size
    assert begins[1:] == ends[:-1]  # no gap, no overlap
    assert all(begin < end for begin, end in zip(begins, ends, strict=True))


# ----------------------------------------------------------------------------- SM count


@pytest.fixture
def fresh_sm_cache(launchers):
    launchers._cuda_sm_count.cache_clear()
    yield
    launchers._cuda_sm_count.cache_clear()


def test_sm_count_asks_the_cuda_device(launchers, monkeypatch, fresh_sm_cache):
    asked = []

    def properties(index):
        asked.append(index)
        return types.SimpleNamespace(multi_processor_count=78)

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    assert launchers.sm_count(torch.device("cuda", 3)) == 78
    assert launchers.sm_count(torch.device("cuda")) == 78  # no index: the current device
    assert launchers.sm_count(torch.device("cuda", 3)) == 78
    assert asked == [3, 2]  # once per device


def test_sm_count_falls_back_off_cuda(launchers, monkeypatch, fresh_sm_cache):
    def no_cuda(index):
        raise AssertionError("a CPU tensor must not query CUDA")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_cuda)
    assert launchers.sm_count(torch.device("cpu")) == launchers.FALLBACK_SM_COUNT


@pytest.mark.parametrize("batch, sample_size", [(1, 10**7), (4, 10**7), (2, 70_000), (64, 9)])
def test_reduction_plan_scales_with_the_sm_count(launchers, batch, sample_size):
    for sms in (1, 78, 132):
        block_b, block_m, chunk, n_splits = launchers.reduction_plan(batch, sample_size, sms)
        row_programs = triton.cdiv(batch, block_b)
        assert n_splits * chunk >= sample_size > (n_splits - 1) * chunk  # tiles, none empty
        assert row_programs * n_splits <= max(launchers.PROGRAMS_PER_SM * sms, row_programs)
        assert chunk % block_m == 0
    # a 16-SM GPU gets fewer splits than an H100 where the samples are large enough to split
    few = launchers.reduction_plan(batch, sample_size, 16)[3]
    many = launchers.reduction_plan(batch, sample_size, 132)[3]
    assert few < many if sample_size == 10**7 else few == many


def test_norm_penalty_plans_for_the_tensors_device(launchers, monkeypatch):
    asked = []

    def one_sm(device):
        asked.append(device)
        return 1

    monkeypatch.setattr(launchers, "sm_count", one_sm)
    grad = _random((1, 70_000), 4)
    penalty, norms = launchers.norm_penalty(grad, 10.0, 1.0, False)
    assert asked == [grad.device]
    assert relative_error(norms, grad.norm(dim=1)) <= FP64_TOL
    assert relative_error(penalty, 10.0 * (grad.norm() - 1) ** 2) <= FP64_TOL
