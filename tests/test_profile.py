"""profile_gp and the `fastgp profile` command on tiny critics (no timing is asserted)."""

import contextlib
import itertools
import json

import pytest
import torch
from cli_helpers import one_line_error
from torch import nn

from fastgp.cli import main
from fastgp.engine.fused_critic import PASSES as ENGINE_PASSES
from fastgp.models import paper_adam
from fastgp.perf.profile import (
    AUTOGRAD_PHASES,
    PHASE_ORDER,
    PhaseTimer,
    engine_phase_order,
    float32_precision,
    phased_step,
    profile_gp,
)


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))


@pytest.mark.parametrize("path", ["reference", "tier1"])
def test_profile_gp_reports_every_quantity(path):
    critic = _tiny()
    before = [p.detach().clone() for p in critic.parameters()]
    result = profile_gp(critic, torch.randn(4, 6), torch.randn(4, 6), path=path, repeats=2, warmup=1)
    assert list(result.phases) == list(AUTOGRAD_PHASES) and all(v >= 0 for v in result.phases.values())
    assert result.gp_counts.flops > result.nogp_counts.flops > 0
    assert result.gp_counts.ops > result.nogp_counts.ops
    assert result.gp_step.repeats == 2 and result.overhead > 0
    data = result.as_dict()
    json.dumps(data)
    assert data["flop_ratio"] == pytest.approx(result.gp_counts.flops / result.nogp_counts.flops)
    table = result.format_table()
    for label in ("backward (incl. double backward)", "GP overhead", "floor", "modeled"):
        assert label in table
    # the caller's critic is not trained by the profiler
    assert all(torch.equal(a, b) for a, b in zip(before, critic.parameters(), strict=True))


def test_profile_gp_tier2_reports_the_engine_passes_at_the_flop_floor():
    critic = _tiny()
    result = profile_gp(critic, torch.randn(4, 6), torch.randn(4, 6), path="tier2", repeats=2,
                        warmup=1)
    assert list(result.phases) == [*ENGINE_PASSES, "optimizer"]
    assert all(v >= 0 for v in result.phases.values())
    # The explicit step costs less than twice the step without penalty (5/3 on large layers).
    assert result.nogp_counts.flops < result.gp_counts.flops < 2 * result.nogp_counts.flops
    assert "tangent (penalty's parameter gradients)" in result.format_table()


def _labels(trace) -> list[tuple[str, int, int]]:
    """The ``fastgp.<phase>`` ranges of a torch.profiler trace: (name, start µs, end µs)."""
    return [(event.name, event.time_range.start, event.time_range.end)
            for event in trace.events() if event.name.startswith("fastgp.")]


@pytest.mark.parametrize("path", ["reference", "tier2"])
def test_phases_are_labelled_in_a_torch_profiler_trace(path):
    critic = _tiny()
    optimizer = paper_adam(critic.parameters())
    real, fake = torch.randn(4, 6), torch.randn(4, 6)
    order = (PHASE_ORDER if path == "reference"
             else engine_phase_order(critic, optimizer, real, fake))
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as trace:
        seconds = phased_step(critic, optimizer, real, fake, path)
    labels = _labels(trace)
    assert [name for name, _, _ in labels] == [f"fastgp.{phase}" for phase in order]
    assert all(seconds[phase] > 0 for phase in order)
    # The ranges follow each other and hold the phase's own ops: the matmuls of the adjoint /
    # input gradient run inside its range.
    assert all(end <= start for (_, _, end), (_, start, _) in itertools.pairwise(labels))
    gradient = "input gradient" if path == "reference" else "adjoint (input gradient)"
    _, start, end = labels[order.index(gradient)]
    inside = {event.name for event in trace.events()
              if start <= event.time_range.start and event.time_range.end <= end}
    assert inside & {"aten::mm", "aten::addmm", "aten::matmul"}


class FakeEvent:
    """A CUDA event on a fake clock: the k-th event recorded in a step is at 2^k − 1 ms, so the
    phase ended by the k-th mark lasts 2^(k−1) ms and every sum of phases tells its parts."""

    recorded: list["FakeEvent"] = []
    synchronizations = 0

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.milliseconds = None

    def record(self, stream=None):
        assert stream == "current stream of cuda:1"
        self.milliseconds = 2.0 ** len(FakeEvent.recorded) - 1
        FakeEvent.recorded.append(self)

    def elapsed_time(self, end):
        # as on a GPU: only once both events completed, which only a synchronize guarantees here
        assert FakeEvent.synchronizations == 1, "elapsed_time read before the step synchronized"
        return end.milliseconds - self.milliseconds


@pytest.fixture
def fake_cuda_events(monkeypatch):
    FakeEvent.recorded, FakeEvent.synchronizations = [], 0

    def synchronize(device=None):
        assert torch.device(device) == torch.device("cuda:1")
        FakeEvent.synchronizations += 1

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: f"current stream of {device}")
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    return FakeEvent


@pytest.mark.parametrize("path", ["reference", "tier1", "tier2"])
def test_cuda_phases_are_timed_by_events_with_one_synchronize_per_step(path, fake_cuda_events):
    # The step runs on CPU tensors; the timer takes its CUDA path because its device is CUDA.
    critic = _tiny()
    optimizer = paper_adam(critic.parameters())
    real, fake = torch.randn(4, 6), torch.randn(4, 6)
    order, names = PHASE_ORDER, AUTOGRAD_PHASES
    if path == "tier2":
        order = engine_phase_order(critic, optimizer, real, fake)
        names = (*ENGINE_PASSES, "optimizer")
    timer = PhaseTimer(names, torch.device("cuda:1"), order)
    seconds = phased_step(critic, optimizer, real, fake, path, timer=timer)
    assert fake_cuda_events.synchronizations == 1
    assert len(fake_cuda_events.recorded) == len(order) + 1  # the start, then one per mark
    expected = dict.fromkeys(names, 0.0)
    for k, phase in enumerate(order, start=1):  # the k-th mark ends a phase of 2^(k−1) ms
        expected[phase] += 2.0 ** (k - 1) / 1e3
    assert seconds == pytest.approx(expected, rel=0, abs=1e-12)


def test_phase_timer_refuses_marks_out_of_order_and_unfinished_steps():
    timer = PhaseTimer(AUTOGRAD_PHASES, torch.device("cpu"), PHASE_ORDER)
    with pytest.raises(RuntimeError, match="phase 'interpolate' ended where 'rest"):
        timer.mark("interpolate")
    timer.mark(PHASE_ORDER[0])
    with pytest.raises(RuntimeError, match="the step ended after 1 of the phases"):
        timer.finish()
    with pytest.raises(ValueError, match=r"phases \['fly'\] of the order"):
        PhaseTimer(AUTOGRAD_PHASES, torch.device("cpu"), ("fly",))


@contextlib.contextmanager
def precision_setting(owner, name, value):
    """Set a torch precision attribute for a block, then restore it (through the same API: a
    legacy getter raises once the other API set the backend)."""
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


def test_float32_precision_reads_both_apis_and_profile_never_changes_it():
    for conv in (False, True):  # the legacy flag
        with precision_setting(torch.backends.cudnn, "allow_tf32", conv):
            assert float32_precision()["tf32_cudnn_conv"] is conv
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has no fp32_precision attributes")
    # Set through the new API, the legacy getters raise; the report still reads it.
    with precision_setting(torch.backends.cuda.matmul, "fp32_precision", "tf32"):
        with pytest.raises(RuntimeError):
            torch.get_float32_matmul_precision()
        settings = float32_precision()
        assert settings["tf32_cuda_matmul"] is True
        assert settings["float32_matmul_precision"] == "set per backend"
        result = profile_gp(_tiny(), torch.randn(4, 6), torch.randn(4, 6), repeats=1, warmup=0)
        assert float32_precision() == settings == result.as_dict()["float32_precision"]


def test_profile_table_names_the_tf32_mode_on_cuda():
    result = profile_gp(_tiny(), torch.randn(4, 6), torch.randn(4, 6), repeats=1, warmup=0)
    assert "TF32" not in result.format_table()  # on the CPU TF32 does not apply
    result.device = "cuda:0"
    result.float32_precision = {"tf32_cudnn_conv": True, "tf32_cuda_matmul": False,
                                "float32_matmul_precision": "highest"}
    assert ("TF32: cuDNN conv on, CUDA matmul off (float32 matmul precision 'highest')"
            in result.format_table())


def test_profile_gp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown path 'fast'"):
        profile_gp(_tiny(), torch.randn(2, 6), torch.randn(2, 6), path="fast")
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        profile_gp(_tiny(), torch.randn(2, 6), torch.randn(2, 6), repeats=0)


def test_profile_command_with_user_factory(capsys):
    code = main(["profile", "--critic", "critics:tiny_critic", "--shape", "6", "--batch", "3",
                 "--repeats", "2", "--warmup", "1", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batch"] == 3 and data["sample_shape"] == [6]
    assert data["gp_step"]["flops"] > data["nogp_step"]["flops"]


def test_profile_command_table_for_builtin(capsys):
    assert main(["profile", "--critic", "mlp", "--batch", "4", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "batch 4 × 2" in out and "GP overhead" in out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--critic", "nomodule_xyz:factory", "--shape", "3"], "cannot import 'nomodule_xyz'"),
        (["--critic", "critics:missing", "--shape", "3"], "has no callable 'missing'"),
        (["--critic", "critics:tiny_critic"], "--shape is required"),
        (["--critic", "critics:tiny_critic", "--shape", "a,b"], "--shape must be positive integers"),
        (["--critic", "resnet"], "built-in name or package.module:factory"),
        (["--batch", "0"], "--batch must be an integer >= 1"),
    ],
)
def test_profile_command_errors(arguments, message, capsys):
    assert main(["profile", *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--repeats", "0"], "--repeats must be an integer >= 1, got 0"),
        (["--warmup=-1"], "--warmup must be an integer >= 0, got -1"),
        (["--weight", "nan"], "--weight must be finite, got nan"),
        (["--weight", "inf"], "--weight must be finite, got inf"),
        (["--weight=-1"], "--weight must be >= 0, got -1"),
        (["--shape", "5"], "--shape 5 does not fit the critic dcgan32: Expected 3D (unbatched) "
                           "or 4D (batched) input to conv2d"),
        (["--critic", "mlp", "--shape", "3,4"], "--shape 3,4 does not fit the critic mlp: mat1 "
                                                "and mat2 shapes cannot be multiplied"),
    ],
)
def test_profile_refuses_bad_values_in_one_line_before_timing(arguments, message, capsys,
                                                             monkeypatch):
    monkeypatch.setattr("fastgp.perf.profile.profile_gp", None)  # never reached
    assert main(["profile", *arguments]) == 2
    one_line_error(capsys.readouterr().err, "profile", message)


def test_profile_critic_module_not_importable_says_to_set_pythonpath(capsys):
    assert main(["profile", "--critic", "my_critics_xyz.nets:make", "--shape", "3"]) == 2
    one_line_error(capsys.readouterr().err, "profile", "cannot import 'my_critics_xyz.nets'",
                   "No module named 'my_critics_xyz'",
                   "add the folder that holds it to PYTHONPATH")


def test_profile_critic_module_with_a_missing_dependency_names_the_dependency(tmp_path, capsys,
                                                                             monkeypatch):
    (tmp_path / "needs_dependency_xyz.py").write_text("import absent_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["profile", "--critic", "needs_dependency_xyz:make", "--shape", "3"]) == 2
    line = one_line_error(capsys.readouterr().err, "profile",
                          "No module named 'absent_dependency_xyz'")
    assert "PYTHONPATH" not in line  # the module was found: its dependency is what is missing
