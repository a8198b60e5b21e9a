"""GP-overhead profiler: where a WGAN-GP critic step spends its time, FLOPs, bytes and memory.

A *critic step* is what a WGAN-GP trainer runs ``n_critic`` times per generator step::

    zero_grad → loss = E[C(fake)] − E[C(real)] (+ penalty) → loss.backward() → Adam step

``profile_gp`` runs it with and without the penalty on the user's critic and reports

- the time of each phase of the GP step (median of ``repeats``): interpolate, forward on x̂,
  input gradient (``autograd.grad(create_graph=True)``), norm + penalty, the backward that
  contains the double backward, and the rest (W-loss forwards, zero_grad, optimizer);
- the GP overhead: median step time with the penalty over median step time without, measured
  interleaved in one process;
- machine-independent counts of one step (:mod:`fastgp.perf.counting`): aten ops, kernels, FLOPs,
  non-GEMM bytes, peak bytes of tensors the step allocates;
- the floor: the step's FLOPs at this machine's measured matmul rate, and the share of it the
  measured step reaches;
- the *modeled* H100 time of both steps (:mod:`fastgp.perf.roofline`);
- the fp32 precision settings of the process (:func:`float32_precision`), which fastgp reads and
  never changes.

On CUDA the phases are timed with CUDA events and one synchronization per step; each phase runs
inside a ``torch.profiler.record_function`` range named ``fastgp.<phase>`` on every device, so a
``torch.profiler`` trace of :func:`phased_step` shows the phases around the kernels.

Paths: ``reference`` is :mod:`fastgp.reference` (the canonical code); ``tier1`` is
:func:`fastgp.gradient_penalty` with the fastgp ops (input checks off, as in a training loop);
``tier2`` is :class:`fastgp.FusedCritic` (its phases are the engine's passes, not autograd's).
"""

from __future__ import annotations

import copy
import functools
import itertools
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from fastgp import ops, reference
from fastgp.engine import FusedCritic
from fastgp.engine.fused_critic import PASSES as ENGINE_PASSES
from fastgp.models import paper_adam
from fastgp.penalty import gradient_penalty
from fastgp.perf.counting import Counts, OpCounter, count
from fastgp.perf.roofline import H100_SXM, GPUSpec, modeled_time
from fastgp.validation import (
    check_batched_float,
    check_finite,
    check_same_layout,
    integer,
    real_number,
)

PATHS = ("reference", "tier1", "tier2")
OPTIMIZER_PHASE = "optimizer"
AUTOGRAD_PHASES = ("interpolate", "forward on x_hat", "input gradient", "norm + penalty",
          "backward (incl. double backward)", "rest (W-loss, optimizer)")

#: The order in which the ``reference`` and ``tier1`` steps end their phases (the W-loss forwards
#: come first and the optimizer last, both in the "rest").
PHASE_ORDER = (AUTOGRAD_PHASES[5], *AUTOGRAD_PHASES[:5], AUTOGRAD_PHASES[5])
#: Prefix of the ``record_function`` ranges around the phases in a ``torch.profiler`` trace.
LABEL_PREFIX = "fastgp."

__all__ = ["PATHS", "AUTOGRAD_PHASES", "GPProfile", "OpCounter", "PhaseTimer", "count", "critic_step",
           "float32_precision", "phased_step", "profile_gp",
           "matmul_flops_per_second"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def float32_precision() -> dict[str, bool | str]:
    """Whether this process lets fp32 convolutions and matmuls run in TF32 on CUDA.

    fastgp never changes these global settings: it reports them (``fastgp info``, ``fastgp
    bench``, :func:`profile_gp`), because they decide how exact fp32 results are on Ampere and
    later GPUs. TF32 rounds the inputs of each product to 10 of fp32's 23 mantissa bits (unit
    roundoff 2^-11 ≈ 4.9e-4 instead of 6e-8), so results computed in TF32 carry relative errors
    of order 1e-4 to 1e-3 where fp32 gives 1e-6.

    - ``tf32_cudnn_conv``: cuDNN convolutions may use TF32 (PyTorch's default: on);
    - ``tf32_cuda_matmul``: cuBLAS matmuls may use TF32 (default: off);
    - ``float32_matmul_precision``: ``torch.get_float32_matmul_precision()`` (``"highest"`` by
      default; ``"high"``/``"medium"`` also let CPU matmuls use TF32/bf16 where oneDNN can), or
      ``"set per backend"`` when it was set through the ``fp32_precision`` attributes.
    """
    return {
        "tf32_cudnn_conv": _tf32_allowed(getattr(torch.backends.cudnn, "conv", None),
                                         lambda: torch.backends.cudnn.allow_tf32),
        "tf32_cuda_matmul": _tf32_allowed(torch.backends.cuda.matmul,
                                          lambda: torch.backends.cuda.matmul.allow_tf32),
        "float32_matmul_precision": _float32_matmul_precision(),
    }


def _tf32_allowed(backend: object, legacy_flag: Callable[[], bool]) -> bool:
    """TF32 on for ``backend``: its ``fp32_precision`` where torch has one (2.9 and later), else
    the legacy ``allow_tf32`` flag.

    The new attribute is read first because reading a legacy flag raises once the new API set
    the backend; it is ``"tf32"``, ``"ieee"`` or ``"none"`` (a legacy flag set to False), and
    only ``"tf32"`` allows TF32.
    """
    precision = getattr(backend, "fp32_precision", None)
    if precision is not None:
        return precision == "tf32"
    return bool(legacy_flag())


def _float32_matmul_precision() -> str:
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:  # torch >= 2.9 once the fp32_precision attributes set the matmuls
        return "set per backend"


def describe_float32_precision(settings: dict[str, bool | str]) -> str:
    """One line for people: ``TF32: cuDNN conv on, CUDA matmul off (float32 matmul precision
    'highest')``."""
    def state(on: bool | str) -> str:
        return "on" if on else "off"

    return (f"TF32: cuDNN conv {state(settings['tf32_cudnn_conv'])}, CUDA matmul "
            f"{state(settings['tf32_cuda_matmul'])} (float32 matmul precision "
            f"{settings['float32_matmul_precision']!r})")


def critic_step(
    critic: nn.Module,
    optimizer: torch.optim.Optimizer,
    real: torch.Tensor,
    fake: torch.Tensor,
    path: str | None,
    weight: float = 10.0,
) -> torch.Tensor:
    """One full critic step; ``path`` is ``"reference"``, ``"tier1"``, ``"tier2"`` or ``None``
    (no penalty). ``tier2`` runs :class:`fastgp.FusedCritic`, which writes the gradients itself."""
    if path == "tier2":
        result = _fused(critic).step(real, fake, weight=weight, check_inputs=False)
        optimizer.step()
        return result.loss
    optimizer.zero_grad(set_to_none=True)
    loss = critic(fake).mean() - critic(real).mean()
    if path == "reference":
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
        loss = loss + reference.gradient_penalty(critic, real, fake, eps, weight)[0]
    elif path == "tier1":
        loss = loss + gradient_penalty(critic, real, fake, weight=weight, check_inputs=False)
    elif path is not None:
        raise ValueError(f"unknown path {path!r}: expected one of {PATHS} or None")
    loss.backward()
    optimizer.step()
    return loss.detach()


_FUSED: weakref.WeakKeyDictionary[nn.Module, FusedCritic] = weakref.WeakKeyDictionary()


def _fused(critic: nn.Module) -> FusedCritic:
    """One engine per critic, built on first use (reading the layers is not part of a step)."""
    if critic not in _FUSED:
        _FUSED[critic] = FusedCritic(critic)
    return _FUSED[critic]


class PhaseTimer:
    """Times the phases of one step, which follow each other without gaps: each ``mark(phase)``
    ends the running phase, named ``phase``, and starts the next.

    On the CPU the time since the previous mark is read at each mark. On CUDA a mark records an
    event on the device's current stream and returns at once; :meth:`finish` synchronizes once
    and adds up the times between consecutive events. Synchronizing at every mark would drain
    the queue of launched kernels at each phase boundary: each phase would then include the
    launch latency that the queue hides in a real step, and the step would run slower.

    Each phase also runs inside a ``torch.profiler.record_function`` range ``fastgp.<phase>``.
    A range is named when it opens but a mark names the phase that just ended, so the timer is
    given ``order``, the phases in the order their marks come; a mark out of that order raises
    rather than label a trace wrongly. Use it as a context manager (an exception inside the step
    closes the open range), then call :meth:`finish`.
    """

    def __init__(self, phases: tuple[str, ...], device: torch.device,
                 order: tuple[str, ...]) -> None:
        unknown = sorted(set(order) - set(phases))
        if unknown:
            raise ValueError(f"phases {unknown} of the order are not among {phases}")
        self.seconds = dict.fromkeys(phases, 0.0)
        self.device = device
        self.order = tuple(order)
        self._use_events = device.type == "cuda"
        self._events: list[torch.cuda.Event] = []
        self._ended = 0
        self._range: torch.profiler.record_function | None = None
        self._start = self._timestamp()
        self._open_range()

    def __enter__(self) -> PhaseTimer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close_range()

    def mark(self, phase: str) -> None:
        """End the running phase, which must be ``phase``, and start the next one."""
        expected = self.order[self._ended] if self._ended < len(self.order) else None
        if phase != expected:
            raise RuntimeError(f"phase {phase!r} ended where {expected!r} was expected "
                               f"(order {self.order})")
        now = self._timestamp()
        self._close_range()
        if self._use_events:
            self._events.append(now)
        else:
            self.seconds[phase] += now - self._start
            self._start = now
        self._ended += 1
        self._open_range()

    def finish(self) -> dict[str, float]:
        """Seconds per phase; on CUDA the one synchronization of the step, then the events."""
        self._close_range()
        if self._ended != len(self.order):
            raise RuntimeError(f"the step ended after {self._ended} of the phases {self.order}")
        if self._use_events:
            torch.cuda.synchronize(self.device)
            edges = itertools.pairwise([self._start, *self._events])
            for phase, (begin, end) in zip(self.order, edges, strict=True):
                self.seconds[phase] += begin.elapsed_time(end) / 1e3  # elapsed_time is in ms
            self._events = []
        return self.seconds

    def _timestamp(self) -> float | torch.cuda.Event:
        if not self._use_events:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def _open_range(self) -> None:
        if self._ended < len(self.order):
            self._range = torch.profiler.record_function(LABEL_PREFIX + self.order[self._ended])
            self._range.__enter__()

    def _close_range(self) -> None:
        if self._range is not None:
            self._range.__exit__(None, None, None)
            self._range = None


def _engine_step(critic, optimizer, real, fake, weight, hook: Callable[[str], None]) -> None:
    """One ``tier2`` step; ``hook`` gets the name of each engine pass (``fastgp.engine.fused_critic.PASSES``)
    as it ends, then ``OPTIMIZER_PHASE`` after the optimizer step."""
    fused = _fused(critic)
    fused.phase_hook = hook
    try:
        fused.step(real, fake, weight=weight, check_inputs=False)
    finally:
        fused.phase_hook = None
    optimizer.step()
    hook(OPTIMIZER_PHASE)


def engine_phase_order(critic: nn.Module, optimizer: torch.optim.Optimizer, real: torch.Tensor,
                       fake: torch.Tensor, weight: float = 10.0) -> tuple[str, ...]:
    """The phases of a ``tier2`` step in the order the engine ends them, read from one step.

    The order depends on the device (two W-loss passes on the CPU, one stacked pass on CUDA),
    on the critic (layers with curvature add a backward) and on micro-batching, so it is read
    from the engine itself rather than assumed; the step also warms up. It trains ``critic``.
    """
    order: list[str] = []
    _engine_step(critic, optimizer, real, fake, weight, order.append)
    return tuple(order)


def phased_step(critic: nn.Module, optimizer: torch.optim.Optimizer, real: torch.Tensor,
                fake: torch.Tensor, path: str, weight: float = 10.0, *,
                timer: PhaseTimer | None = None) -> dict[str, float]:
    """One GP critic step of ``path`` with each phase timed and labelled; seconds per phase.

    The phases are ``AUTOGRAD_PHASES`` for ``reference`` and ``tier1``, and the engine's passes plus the
    optimizer for ``tier2`` (whose order :func:`engine_phase_order` reads from one extra step when
    no ``timer`` is given). Run it under ``torch.profiler.profile`` to see the phases as
    ``fastgp.<phase>`` ranges in the trace.
    """
    if timer is None:
        timer = _timer(critic, optimizer, real, fake, path, weight)
    with timer:
        if path == "tier2":
            _engine_step(critic, optimizer, real, fake, weight, timer.mark)
        else:
            _phased_autograd_step(critic, optimizer, real, fake, path, weight, timer.mark)
    return timer.finish()


def _timer(critic, optimizer, real, fake, path, weight) -> PhaseTimer:
    """A fresh timer for one step of ``path`` on ``real``'s device."""
    names = _phase_names(path)
    return PhaseTimer(names, real.device, _phase_order(critic, optimizer, real, fake, path, weight))


def _phase_names(path: str) -> tuple[str, ...]:
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}: expected one of {PATHS}")
    return (*ENGINE_PASSES, OPTIMIZER_PHASE) if path == "tier2" else AUTOGRAD_PHASES


def _phase_order(critic, optimizer, real, fake, path, weight) -> tuple[str, ...]:
    if path == "tier2":
        return engine_phase_order(critic, optimizer, real, fake, weight)
    return PHASE_ORDER


def _phased_autograd_step(critic, optimizer, real, fake, path, weight,
                          mark: Callable[[str], None]) -> None:
    """The GP step of ``reference`` or ``tier1``, ending its phases in ``PHASE_ORDER``."""
    blocks = reference if path == "reference" else ops
    optimizer.zero_grad(set_to_none=True)
    loss = critic(fake).mean() - critic(real).mean()
    mark(AUTOGRAD_PHASES[5])
    eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    x_hat = blocks.interpolate(real, fake, eps).detach().requires_grad_(True)
    mark(AUTOGRAD_PHASES[0])
    scores = critic(x_hat)
    mark(AUTOGRAD_PHASES[1])
    grad = reference.input_gradient(x_hat, scores)
    mark(AUTOGRAD_PHASES[2])
    penalty, _ = blocks.norm_penalty(grad, weight, 1.0, False)
    mark(AUTOGRAD_PHASES[3])
    (loss + penalty).backward()
    mark(AUTOGRAD_PHASES[4])
    optimizer.step()
    mark(AUTOGRAD_PHASES[5])


def _fastest_seconds(run: Callable[[], object], device: torch.device, repeats: int = 10) -> float:
    timings = []
    for _ in range(repeats + 1):  # the first run warms up
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        timings.append(time.perf_counter() - start)
    return min(timings[1:])


@functools.cache
def matmul_flops_per_second(device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """This machine's peak measured dense rate: the faster of a square matmul and a 3×3 convolution.

    The fastest of 10 runs of each, not the median, because the floor is a best case (on a shared
    2-core machine single runs vary by ±25%, so a step can still beat its floor by that much). A
    convolution is measured too because on CPUs oneDNN's convolutions can outrun the BLAS
    matmul; the floor must not be beaten by the step it bounds. Sizes: a 2048² matmul and a
    128→128-channel 3×3 convolution on 32×32×32 inputs on a CPU; 8192² and 4× the batch on a GPU.
    """
    target = torch.device(device)
    size, batch = (2048, 32) if target.type == "cpu" else (8192, 128)
    a = torch.randn(size, size, device=target, dtype=dtype)
    b = torch.randn(size, size, device=target, dtype=dtype)
    matmul_rate = 2 * size**3 / _fastest_seconds(lambda: torch.mm(a, b), target)
    images = torch.randn(batch, 128, 32, 32, device=target, dtype=dtype)
    weight = torch.randn(128, 128, 3, 3, device=target, dtype=dtype)
    conv_flops = 2 * batch * 32 * 32 * 128 * 128 * 9
    conv = lambda: torch.nn.functional.conv2d(images, weight, padding=1)  # noqa: E731
    return max(matmul_rate, conv_flops / _fastest_seconds(conv, target))


@dataclass
class TimingStats:
    median: float
    minimum: float
    maximum: float
    repeats: int

    @classmethod
    def of(cls, seconds: list[float]) -> TimingStats:
        return cls(statistics.median(seconds), min(seconds), max(seconds), len(seconds))


def time_interleaved(steps: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device) -> dict[str, TimingStats]:
    """Time each step ``repeats`` times, round-robin so that drift hits every step alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: TimingStats.of(values) for name, values in samples.items()}


@dataclass
class GPProfile:
    """Result of :func:`profile_gp`; ``format_table()`` for people, ``as_dict()`` for machines."""

    path: str
    batch: int
    sample_shape: tuple[int, ...]
    device: str
    phases: dict[str, float]
    gp_step: TimingStats
    nogp_step: TimingStats
    gp_counts: Counts
    nogp_counts: Counts
    matmul_flops_per_second: float
    gpu: GPUSpec
    cuda_peak_bytes: int | None = None  # allocator high-water mark of one GP step, CUDA only
    float32_precision: dict[str, bool | str] = field(default_factory=float32_precision)

    @property
    def overhead(self) -> float:
        return self.gp_step.median / self.nogp_step.median

    @property
    def floor_seconds(self) -> float:
        return self.gp_counts.flops / self.matmul_flops_per_second

    @property
    def percent_of_floor(self) -> float:
        return 100 * self.floor_seconds / self.gp_step.median

    def modeled(self, with_penalty: bool = True):
        counts = self.gp_counts if with_penalty else self.nogp_counts
        return modeled_time(counts.kernels, self.gpu)

    def as_dict(self) -> dict:
        def step(stats: TimingStats, counts: Counts, with_penalty: bool) -> dict:
            return {"median_seconds": stats.median, "min_seconds": stats.minimum,
                    "max_seconds": stats.maximum, "repeats": stats.repeats,
                    **counts.summary(), **self.modeled(with_penalty).as_dict()}

        return {
            "path": self.path, "batch": self.batch, "sample_shape": list(self.sample_shape),
            "device": self.device, "phases_seconds": self.phases,
            "gp_step": step(self.gp_step, self.gp_counts, True),
            "nogp_step": step(self.nogp_step, self.nogp_counts, False),
            "gp_overhead": self.overhead,
            "flop_ratio": self.gp_counts.flops / max(self.nogp_counts.flops, 1),
            "matmul_flops_per_second": self.matmul_flops_per_second,
            "floor_seconds": self.floor_seconds, "percent_of_floor": self.percent_of_floor,
            "modeled_gpu": self.gpu.name, "cuda_peak_bytes": self.cuda_peak_bytes,
            "float32_precision": self.float32_precision,
        }

    def format_table(self) -> str:
        total = sum(self.phases.values())
        shape = "×".join(str(s) for s in self.sample_shape)
        lines = [f"GP critic step, path={self.path}, batch {self.batch} × {shape}, device {self.device}"]
        if self.device.startswith("cuda"):  # fp32 convolutions and matmuls may run in TF32
            lines.append(describe_float32_precision(self.float32_precision))
        lines += ["", f"{'phase of the GP step':<42}{'ms':>10}{'share':>9}"]
        for phase, seconds in self.phases.items():
            lines.append(f"{phase:<42}{1e3 * seconds:>10.2f}{100 * seconds / total:>8.1f}%")
        lines.append(f"{'sum of phases':<42}{1e3 * total:>10.2f}")
        gp_model, nogp_model = self.modeled(True), self.modeled(False)
        rows = [
            ("step time, median [min, max] ms", _stats_ms(self.gp_step), _stats_ms(self.nogp_step)),
            ("aten ops / kernels", f"{self.gp_counts.ops} / {self.gp_counts.kernel_count}",
             f"{self.nogp_counts.ops} / {self.nogp_counts.kernel_count}"),
            ("GFLOP", f"{self.gp_counts.flops / 1e9:.3f}", f"{self.nogp_counts.flops / 1e9:.3f}"),
            ("non-GEMM MB moved", f"{self.gp_counts.non_gemm_bytes / 1e6:.1f}",
             f"{self.nogp_counts.non_gemm_bytes / 1e6:.1f}"),
            ("peak MB allocated by the step", f"{self.gp_counts.peak_bytes / 1e6:.1f}",
             f"{self.nogp_counts.peak_bytes / 1e6:.1f}"),
            (f"modeled {self.gpu.name} ms", f"{1e3 * gp_model.seconds:.3f}",
             f"{1e3 * nogp_model.seconds:.3f}"),
        ]
        if self.cuda_peak_bytes is not None:
            rows.append(("CUDA allocator peak MB", f"{self.cuda_peak_bytes / 1e6:.1f}", ""))
        lines += ["", f"{'step':<36}{'with GP':>28}{'without GP':>28}"]
        lines += [f"{label:<36}{a:>28}{b:>28}" for label, a, b in rows]
        flop_ratio = self.gp_counts.flops / max(self.nogp_counts.flops, 1)
        lines += [
            "",
            f"GP overhead (time with / without GP): {self.overhead:.2f}×   FLOP ratio: {flop_ratio:.2f}×",
            f"floor: {1e3 * self.floor_seconds:.2f} ms = {self.gp_counts.flops / 1e9:.2f} GFLOP at the "
            f"measured peak matmul/conv rate {self.matmul_flops_per_second / 1e9:.1f} GFLOP/s; "
            f"step reaches {self.percent_of_floor:.1f}% of floor",
            f"modeled GPU time (roofline, not measured): {1e3 * gp_model.seconds:.3f} ms with GP, "
            f"overhead {gp_model.seconds / max(nogp_model.seconds, 1e-12):.2f}×; kernels bound by "
            f"launch/memory/compute: {gp_model.launch_bound}/{gp_model.memory_bound}/"
            f"{gp_model.compute_bound}",
        ]
        return "\n".join(lines)


def _stats_ms(stats: TimingStats) -> str:
    return f"{1e3 * stats.median:.2f} [{1e3 * stats.minimum:.2f}, {1e3 * stats.maximum:.2f}]"


def profile_gp(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    path: str = "reference",
    weight: float = 10.0,
    repeats: int = 10,
    warmup: int = 2,
    gpu: GPUSpec = H100_SXM,
) -> GPProfile:
    """Profile the WGAN-GP critic step of ``critic`` on ``real``/``fake`` (module docstring).

    The critic is copied; the caller's parameters and gradients are left untouched. Adam with the
    paper's settings is the optimizer.
    """
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}: expected one of {PATHS}")
    check_batched_float("real", real)
    check_batched_float("fake", fake)
    check_same_layout("real", real, "fake", fake)
    check_finite("real", real)
    check_finite("fake", fake)
    weight = real_number("weight", weight, minimum=0.0)
    repeats = integer("repeats", repeats)
    warmup = integer("warmup", warmup, minimum=0)
    device = real.device
    gp_critic, nogp_critic = copy.deepcopy(critic), copy.deepcopy(critic)
    gp_optimizer, nogp_optimizer = paper_adam(gp_critic.parameters()), paper_adam(nogp_critic.parameters())

    def gp_step():
        return critic_step(gp_critic, gp_optimizer, real, fake, path, weight)

    def nogp_step():
        return critic_step(nogp_critic, nogp_optimizer, real, fake, None)

    timings = time_interleaved({"gp": gp_step, "nogp": nogp_step}, repeats, max(warmup, 1), device)
    gp_counts, _ = count(gp_step)
    nogp_counts, _ = count(nogp_step)
    cuda_peak_bytes = _cuda_peak_bytes(gp_step, device) if device.type == "cuda" else None
    order = _phase_order(gp_critic, gp_optimizer, real, fake, path, weight)
    phase_samples = [phased_step(gp_critic, gp_optimizer, real, fake, path, weight,
                                 timer=PhaseTimer(_phase_names(path), device, order))
                     for _ in range(repeats)]
    phases = {phase: statistics.median(sample[phase] for sample in phase_samples)
              for phase in phase_samples[0]}
    return GPProfile(
        path=path, batch=real.shape[0], sample_shape=tuple(real.shape[1:]), device=str(device),
        phases=phases, gp_step=timings["gp"], nogp_step=timings["nogp"], gp_counts=gp_counts,
        nogp_counts=nogp_counts,
        matmul_flops_per_second=matmul_flops_per_second(device.type, real.dtype), gpu=gpu,
        cuda_peak_bytes=cuda_peak_bytes, float32_precision=float32_precision(),
    )


def _cuda_peak_bytes(step: Callable[[], object], device: torch.device) -> int:
    """Bytes the CUDA allocator's high-water mark rose above what was allocated before ``step``."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
