"""Which implementation of the fastgp ops runs: ``auto``, ``triton``, ``native`` or ``torch``.

- ``torch``: the PyTorch composite — the oracle and the fallback, available everywhere.
- ``triton``: the Triton kernels of :mod:`fastgp.ops.triton`; on CUDA tensors, or on CPU
  tensors when ``TRITON_INTERPRET=1`` was set before fastgp was imported (tests).
- ``native``: the C++/CUDA extension ``fastgp._C``, when it was built.
- ``auto`` (default): Triton on CUDA, native on CPU when built, else torch.

A public function's ``backend=`` argument wins over the global setting of :func:`set_backend`.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from fastgp.ops import native

BACKENDS = ("auto", "triton", "native", "torch")
_global_backend = "auto"
# Looked up once: torch.compile reads a constant instead of tracing an import system call.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def set_backend(backend: str) -> None:
    """Set the backend that ``backend=None`` resolves to (``"auto"`` by default)."""
    global _global_backend
    _check_name(backend)
    _global_backend = backend


def get_backend() -> str:
    return _global_backend


def _check_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {BACKENDS}")


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton backend cannot run on ``device``, or None when it can."""
    if not _TRITON_INSTALLED:
        return "triton is not installed"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and triton_interpreted():
        return None
    return (f"Triton kernels run on CUDA devices (or on the CPU with TRITON_INTERPRET=1 set "
            f"before import); got a {device.type} tensor")


def native_unavailable_reason(device: torch.device) -> str | None:
    """Why the native extension cannot run on ``device``, or None when it can."""
    reason = native.load_error()
    if reason is not None:
        return reason
    if device.type == "cuda" and not native.has_cuda():
        return "fastgp._C was built without CUDA kernels"
    if device.type not in ("cpu", "cuda"):
        return f"fastgp._C has kernels for cpu and cuda, not {device.type}"
    return None


def resolve(backend: str | None, device: torch.device) -> str:
    """The concrete backend (``triton``, ``native`` or ``torch``) for tensors on ``device``."""
    backend = _global_backend if backend is None else backend
    _check_name(backend)
    if backend == "auto":
        if device.type == "cuda" and triton_unavailable_reason(device) is None:
            return "triton"
        if native_unavailable_reason(device) is None:
            return "native"
        return "torch"
    reason = {"triton": triton_unavailable_reason,
              "native": native_unavailable_reason}.get(backend, lambda _: None)(device)
    if reason is not None:
        raise RuntimeError(f"backend {backend!r} is not usable here: {reason}")
    return backend


def environment_report() -> dict:
    """Versions, devices and, per backend and device, whether it is usable or why not."""
    import importlib.metadata

    try:
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = None
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices += [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    checks = {"triton": triton_unavailable_reason, "native": native_unavailable_reason,
              "torch": lambda _: None}
    usable = {
        str(device): {name: (check(device) or "usable") for name, check in checks.items()}
        for device in devices
    }
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "triton_interpret": triton_interpreted(),
        "global_backend": _global_backend,
        "devices": {str(device): _device_name(device) for device in devices},
        "backends": usable,
        "auto": {str(device): resolve("auto", device) for device in devices},
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"
