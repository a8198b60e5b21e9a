"""The benchmark matrix: every penalty path against the reference, and against the step without GP.

For each case (a critic and a batch) and each path, one process times the full critic step
(median/min/max of interleaved repeats), counts one step (:mod:`fastgp.perf.counting`) and models its
H100 time (:mod:`fastgp.perf.roofline`). Results go to ``bench.csv`` (one row per case and path, with
the device, its fp32 precision settings (TF32), torch, fastgp and git versions), ``bench.md`` and
``bench.png``. Timings are reported, never asserted.
"""

from __future__ import annotations

import copy
import csv
import datetime
import os
import platform
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastgp import extras
from fastgp._version import __version__
from fastgp.models import (
    InstanceNormDCGANCritic,
    SumPoolResNetCritic,
    dcgan_critic,
    paper_adam,
    resnet32_critic,
    spectral_norm_dcgan_critic,
    toy_critic,
)
from fastgp.perf.counting import count
from fastgp.perf.profile import (
    PATHS,
    critic_step,
    describe_float32_precision,
    float32_precision,
    matmul_flops_per_second,
    time_interleaved,
)
from fastgp.perf.roofline import H100_SXM, modeled_time
from fastgp.perf.tables import table_lines

NO_GP = "nogp"


@dataclass(frozen=True)
class Critic:
    """A built-in critic: how to build it and the shape of one sample."""

    build: Callable[[], nn.Module]
    sample_shape: tuple[int, ...]
    description: str


CRITICS = {
    "mlp": Critic(lambda: toy_critic(2, 512, 3), (2,), "WGAN-GP toy MLP 2→512×3→1"),
    "dcgan32": Critic(lambda: dcgan_critic(32), (3, 32, 32), "DCGAN critic, 32×32, 64-128-256"),
    "resnet32": Critic(resnet32_critic, (3, 32, 32), "WGAN-GP paper's CIFAR ResNet critic"),
    "dcgan64": Critic(lambda: dcgan_critic(64), (3, 64, 64), "DCGAN critic, 64×64, 64-…-512"),
    # Written as users write them: subclasses with their own forward.
    "dcgan32_in": Critic(InstanceNormDCGANCritic, (3, 32, 32),
                         "DCGAN critic with InstanceNorm, ending in a 4×4 conv (B, 1, 1, 1)"),
    "resnet32_sum": Critic(SumPoolResNetCritic, (3, 32, 32),
                           "pre-activation ResNet, in-place ReLU heads, global sum pooling"),
    "dcgan32_sn": Critic(spectral_norm_dcgan_critic, (3, 32, 32),
                         "DCGAN critic with spectral normalization on every weight"),
}


@dataclass(frozen=True)
class Case:
    critic: str
    batch: int

    @property
    def name(self) -> str:
        return f"{self.critic}-b{self.batch}"


STANDARD_MATRIX = (Case("mlp", 256), Case("mlp", 4096), Case("dcgan32", 64),
                   Case("resnet32", 64), Case("dcgan64", 32), Case("dcgan32_in", 64),
                   Case("resnet32_sum", 64), Case("dcgan32_sn", 64))

CSV_COLUMNS = [
    "case", "critic", "batch", "path", "median_ms", "min_ms", "max_ms", "repeats",
    "speedup_vs_reference", "gp_overhead", "flops", "flop_ratio", "ops", "kernels",
    "non_gemm_bytes", "peak_bytes", "percent_of_floor", "modeled_h100_ms", "device",
    "device_name", "tf32_cudnn_conv", "tf32_cuda_matmul", "float32_matmul_precision",
    "torch_version", "fastgp_version", "git_commit", "timestamp",
]


def git_commit() -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def gpu_description(device: torch.device) -> str:
    """GPU name, memory and power limit from NVML, or why there is none.

    For a CUDA device, the GPU that torch runs it on (:func:`nvml_handle`); otherwise NVML's
    first GPU, if the machine has one.
    """
    try:
        import pynvml
    except ImportError:
        return "no GPU information (nvidia-ml-py not installed)"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return f"no GPU (NVML: {error})"
    try:
        handle = nvml_handle(pynvml, device)
        name = _text(pynvml.nvmlDeviceGetName(handle))
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
        power = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
        return f"{name}, {memory:.0f} GiB, power limit {power:.0f} W"
    except (pynvml.NVMLError, LookupError) as error:
        return f"GPU present but NVML query failed: {error}"
    finally:
        pynvml.nvmlShutdown()


def nvml_handle(pynvml, device: torch.device):
    """The NVML handle of the GPU behind torch's ``device``.

    NVML numbers every GPU of the machine in PCI bus order and ignores ``CUDA_VISIBLE_DEVICES``;
    torch numbers only the visible GPUs, in CUDA's order. With ``CUDA_VISIBLE_DEVICES=2,3``,
    torch's ``cuda:0`` is NVML's GPU 2, so torch's index would describe another GPU. The GPU is
    found by the PCI bus id in torch's device properties, else by their UUID, else by the
    device's entry in ``CUDA_VISIBLE_DEVICES`` (:func:`visible_device`). Raises ``LookupError``
    when none of them finds it.
    """
    if device.type != "cuda":
        return pynvml.nvmlDeviceGetHandleByIndex(0)
    index = device.index if device.index is not None else torch.cuda.current_device()
    properties = torch.cuda.get_device_properties(index)
    lookups = ((pynvml.nvmlDeviceGetHandleByPciBusId, _pci_bus_id(properties)),
               (pynvml.nvmlDeviceGetHandleByUUID, _uuid(properties)))
    for lookup, key in lookups:
        if key is None:  # an older torch without this property
            continue
        try:
            return lookup(key)
        except pynvml.NVMLError:  # e.g. NVML sees other GPUs than CUDA (a container)
            continue
    entry = visible_device(index, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if isinstance(entry, int):
        return pynvml.nvmlDeviceGetHandleByIndex(entry)
    return _handle_by_uuid_prefix(pynvml, entry)


def _pci_bus_id(properties) -> str | None:
    """``domain:bus:device.function`` in NVML's format (``00000000:3B:00.0``), or None when torch's
    properties lack the PCI fields."""
    fields = [getattr(properties, name, None)
              for name in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if None in fields:
        return None
    domain, bus, slot = fields
    return f"{domain:08X}:{bus:02X}:{slot:02X}.0"


def _uuid(properties) -> str | None:
    """NVML's name of the GPU's UUID, ``GPU-<uuid>`` (torch prints the bare UUID), or None."""
    uuid = getattr(properties, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def visible_device(index: int, variable: str | None) -> int | str:
    """How ``CUDA_VISIBLE_DEVICES`` (``variable``) names the GPU of torch's ``cuda:index``.

    An ``int`` is an index among all the machine's GPUs in CUDA's order, which is NVML's order
    when ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or the GPUs are alike (CUDA's default puts the fastest
    first); a ``str`` is a UUID (``GPU-…``, ``MIG-…``) or a prefix of one. Parsed as CUDA parses
    it: entries up to the first invalid one, each read up to its first non-digit (``"1a"`` is 1).
    Unset, torch's index is the GPU's index.
    """
    if variable is None:
        return index
    entries: list[int | str] = []
    for entry in (part.strip() for part in variable.split(",")):
        digits = re.match(r"\d+", entry)
        if entry.startswith(("GPU-", "MIG-")):
            entries.append(entry)
        elif digits:
            entries.append(int(digits.group()))
        else:
            break
    if index >= len(entries):
        raise LookupError(f"cuda:{index} is not among the GPUs of "
                          f"CUDA_VISIBLE_DEVICES={variable!r}")
    return entries[index]


def _handle_by_uuid_prefix(pynvml, prefix: str):
    """The handle of the one GPU whose UUID starts with ``prefix`` (CUDA accepts prefixes)."""
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    matches = [h for h in handles if _text(pynvml.nvmlDeviceGetUUID(h)).startswith(prefix)]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} GPUs have a UUID starting with {prefix!r}")
    return matches[0]


def _text(value: str | bytes) -> str:
    """NVML strings: ``bytes`` in older nvidia-ml-py releases, ``str`` in newer ones."""
    return value.decode() if isinstance(value, bytes) else value


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({gpu_description(device)})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; " \
           f"{gpu_description(device)}"


def run_case(case: Case, paths: Sequence[str], repeats: int, warmup: int,
             device: torch.device) -> list[dict]:
    """Time, count and model every path of one case; one row per path (plus the no-GP step)."""
    spec = CRITICS[case.critic]
    torch.manual_seed(0)
    critic = spec.build().to(device)
    real = torch.randn(case.batch, *spec.sample_shape, device=device)
    fake = torch.randn(case.batch, *spec.sample_shape, device=device)
    steps = {}
    for path in (*paths, NO_GP):
        path_critic = copy.deepcopy(critic)
        optimizer = paper_adam(path_critic.parameters())
        penalty_path = None if path == NO_GP else path
        steps[path] = (lambda c=path_critic, o=optimizer, p=penalty_path:
                       critic_step(c, o, real, fake, p))
    timings = time_interleaved(steps, repeats, warmup, device)
    counts = {path: count(step)[0] for path, step in steps.items()}
    matmul_rate = matmul_flops_per_second(device.type, torch.float32)
    reference_median = timings["reference"].median if "reference" in timings else float("nan")
    rows = []
    for path in steps:
        stats, path_counts = timings[path], counts[path]
        rows.append({
            "case": case.name, "critic": case.critic, "batch": case.batch, "path": path,
            "median_ms": 1e3 * stats.median, "min_ms": 1e3 * stats.minimum,
            "max_ms": 1e3 * stats.maximum, "repeats": stats.repeats,
            "speedup_vs_reference": reference_median / stats.median,
            "gp_overhead": stats.median / timings[NO_GP].median,
            "flops": path_counts.flops,
            "flop_ratio": path_counts.flops / max(counts[NO_GP].flops, 1),
            "ops": path_counts.ops, "kernels": path_counts.kernel_count,
            "non_gemm_bytes": path_counts.non_gemm_bytes, "peak_bytes": path_counts.peak_bytes,
            "percent_of_floor": 100 * path_counts.flops / matmul_rate / stats.median,
            "modeled_h100_ms": 1e3 * modeled_time(path_counts.kernels, H100_SXM).seconds,
        })
    return rows


def run_matrix(cases: Sequence[Case], paths: Sequence[str], repeats: int, warmup: int,
               device: torch.device, progress: bool = True) -> list[dict]:
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise ValueError(f"unknown paths {unknown}: expected some of {PATHS}")
    metadata = {
        "device": str(device), "device_name": device_name(device), **float32_precision(),
        "torch_version": torch.__version__, "fastgp_version": __version__,
        "git_commit": git_commit(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    rows = []
    for case in extras.progress_bar(cases, desc="bench", unit="case", disable=not progress):
        rows += [row | metadata for row in run_case(case, paths, repeats, warmup, device)]
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict]) -> str:
    columns = ["case", "path", "median ms [min, max]", "vs reference", "GP overhead",
               "FLOP ratio", "% of floor", "aten ops", "non-GEMM MB", "peak MB", "modeled H100 ms"]
    cells = [[row["case"], row["path"],
              f"{row['median_ms']:.2f} [{row['min_ms']:.2f}, {row['max_ms']:.2f}]",
              f"{row['speedup_vs_reference']:.2f}×", f"{row['gp_overhead']:.2f}×",
              f"{row['flop_ratio']:.2f}", f"{row['percent_of_floor']:.0f}%", f"{row['ops']}",
              f"{row['non_gemm_bytes'] / 1e6:.1f}", f"{row['peak_bytes'] / 1e6:.1f}",
              f"{row['modeled_h100_ms']:.3f}"] for row in rows]
    lines = table_lines(columns, cells)
    first = rows[0] if rows else {}
    device = first.get("device_name", "?")
    if str(first.get("device", "")).startswith("cuda"):  # fp32 convs and matmuls may be TF32
        device += f"; {describe_float32_precision(first)}"
    lines += ["", f"Device: {device}; torch {first.get('torch_version', '?')}; "
              f"fastgp {first.get('fastgp_version', '?')} ({first.get('git_commit', '?')}). "
              "Medians of interleaved repeats in one process; GP overhead = step time / no-GP "
              "step time; modeled H100 times are a roofline model (docs/roofline.md), not "
              "measurements."]
    return "\n".join(lines) + "\n"


def plot_rows(path: Path, rows: list[dict]) -> None:
    """Two panels: measured GP overhead per case and path, and the modeled H100 overhead."""
    # Loaded here, when a figure is asked for; a Figure, not pyplot, so that the backend of the
    # calling program is left as it is.
    from matplotlib.figure import Figure

    cases = list(dict.fromkeys(row["case"] for row in rows))
    paths = [p for p in dict.fromkeys(row["path"] for row in rows) if p != NO_GP]
    by_key = {(row["case"], row["path"]): row for row in rows}
    figure = Figure(figsize=(12, 4.2), dpi=100)
    measured, modeled = figure.subplots(1, 2)
    width = 0.8 / max(len(paths), 1)
    for index, name in enumerate(paths):
        offsets = [i + (index - (len(paths) - 1) / 2) * width for i in range(len(cases))]
        ratios, low, high, model = [], [], [], []
        for case in cases:
            row, base = by_key[(case, name)], by_key[(case, NO_GP)]
            ratios.append(row["gp_overhead"])
            low.append(row["gp_overhead"] - row["min_ms"] / base["median_ms"])
            high.append(row["max_ms"] / base["median_ms"] - row["gp_overhead"])
            model.append(row["modeled_h100_ms"] / base["modeled_h100_ms"])
        measured.bar(offsets, ratios, width, yerr=[low, high], capsize=3, label=name)
        modeled.bar(offsets, model, width, label=name)
    for axis, title in ((measured, f"measured on {rows[0]['device']}"),
                        (modeled, "modeled H100 (roofline, not measured)")):
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.axhline(5 / 3, color="grey", linestyle="--", linewidth=0.8, label="5/3 FLOP floor")
        axis.set_xticks(range(len(cases)), cases, rotation=20)
        axis.set_ylabel("GP step / no-GP step")
        axis.set_title(title)
        axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


def write_outputs(out_dir: Path, rows: list[dict]) -> list[Path]:
    """Write ``bench.csv``, ``bench.md`` and, where matplotlib is installed (the ``train``
    extra), ``bench.png``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "bench.csv", out_dir / "bench.md"]
    write_csv(paths[0], rows)
    paths[1].write_text(markdown_table(rows))
    if extras.installed("matplotlib"):
        paths.append(out_dir / "bench.png")
        plot_rows(paths[2], rows)
    return paths
