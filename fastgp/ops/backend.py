"""Which implementation of the fastgp ops runs: ``auto``, ``triton``, ``native`` or ``torch``.

- ``torch``: the PyTorch composite — the oracle and the fallback, available everywhere.
- ``triton``: the Triton kernels of :mod:`fastgp.ops.triton`; on CUDA tensors, where Triton can
  build its launcher (a C compiler and Python's headers, checked once per process), or on CPU
  tensors when ``TRITON_INTERPRET=1`` was set before fastgp was imported (tests).
- ``native``: the C++/CUDA extension ``fastgp._C``, when it was built.
- ``auto`` (default): Triton on CUDA when usable, native when built for the device, else torch;
  ``fastgp info`` says why a backend is not usable.

A public function's ``backend=`` argument wins over the global setting of :func:`set_backend`.
The choice is made here, in Python, before any op runs: :func:`resolve` names the backend for a
device and :func:`kernels` gives that implementation's ops (each registered once, see
``fastgp/ops/README.md``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import torch

from fastgp.ops import composite, native
from fastgp.ops.formulas import Kernels

BACKENDS = ("auto", "triton", "native", "torch")
_global_backend = "auto"
# Looked up once: torch.compile reads a constant instead of tracing an import system call.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
# triton_build_error()'s answer, filled on the first eager call (key "triton").
_TRITON_BUILD_CHECK: dict[str, str | None] = {}
# Asked once, for the same reason: torch.compile cannot trace an op that returns a bool.
_NATIVE_HAS_CUDA = native.has_cuda()


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
        return None if triton_interpreted() else _checked_triton_build_error()
    if device.type == "cpu" and triton_interpreted():
        return None
    return (f"Triton kernels run on CUDA devices (or on the CPU with TRITON_INTERPRET=1 set "
            f"before import); got a {device.type} tensor")


def _checked_triton_build_error() -> str | None:
    # torch.compile must not trace a compiler run: while compiling, use the answer of an earlier
    # eager call; without one, assume Triton builds — Inductor compiles Triton kernels with the
    # same toolchain on CUDA, so a missing one fails there with Triton's own message.
    if torch.compiler.is_compiling():
        return _TRITON_BUILD_CHECK.get("triton")
    if "triton" not in _TRITON_BUILD_CHECK:
        reason = _TRITON_BUILD_CHECK["triton"] = triton_build_error()
        if reason is not None:
            warnings.warn(f"fastgp: Triton kernels cannot run on CUDA here: {reason}. Backend "
                          f"'auto' takes the native or torch kernels instead (`fastgp info`).",
                          RuntimeWarning, stacklevel=2)
    return _TRITON_BUILD_CHECK["triton"]


def triton_build_error() -> str | None:
    """Why Triton cannot build the C launcher of its CUDA kernels here, or None when it can.

    Importing triton needs neither, but the first launch on CUDA compiles a C module that
    includes ``Python.h``, with ``$CC`` or else ``gcc`` or else ``clang`` (Triton's own order);
    without them every kernel call fails. The compiler and headers are looked up as Triton looks
    them up, then a small C file that includes ``Python.h`` is built the way Triton builds its
    launcher. A build function set in ``triton.knobs.build.impl`` replaces the compiler call.
    """
    import triton

    knobs = getattr(triton, "knobs", None)  # absent from older Triton releases
    if getattr(getattr(knobs, "build", None), "impl", None) is not None:
        return None
    compiler = os.environ.get("CC")
    if compiler is None:
        compiler = shutil.which("gcc") or shutil.which("clang")
        if compiler is None:
            return ("no C compiler found (Triton builds the launcher of its CUDA kernels with $CC, "
                    "gcc or clang): install gcc or set CC")
    elif shutil.which(compiler) is None:
        return f"CC={compiler!r}, the C compiler Triton builds its CUDA launcher with, is not found"
    scheme = sysconfig.get_default_scheme()
    if scheme == "posix_local":  # Debian's scheme; Triton reads the headers of posix_prefix
        scheme = "posix_prefix"
    include = sysconfig.get_paths(scheme=scheme)["include"]
    if not os.path.isfile(os.path.join(include, "Python.h")):
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return (f"Python's development headers are missing (no Python.h in {include}), and "
                f"Triton's CUDA launcher includes them: install python{version}-dev (or "
                f"python{version}-devel)")
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "probe.c")
        with open(source, "w") as file:
            file.write("#include <Python.h>\nint fastgp_probe(void) { return Py_IsInitialized(); }\n")
        command = [compiler, source, "-O3", "-shared", "-fPIC", f"-I{include}",
                   "-o", os.path.join(folder, "probe.so")]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"the C compiler {compiler} did not run for Triton's CUDA launcher ({error})"
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "no message").splitlines()
        first_error = next((line for line in lines if "error" in line.lower()), lines[0])
        return (f"the C compiler {compiler} cannot build Triton's CUDA launcher against Python.h "
                f"(exit {result.returncode}: {first_error.strip()})")
    return None


def native_unavailable_reason(device: torch.device) -> str | None:
    """Why the native extension cannot run on ``device``, or None when it can."""
    reason = native.load_error()
    if reason is not None:
        return reason
    if device.type == "cuda" and not _NATIVE_HAS_CUDA:
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


def kernels(resolved: str) -> Kernels:
    """The ops of the concrete backend ``resolved`` (``triton``, ``native`` or ``torch``, as
    :func:`resolve` returns it). The Triton implementation is imported on first use: importing
    triton costs time that users of the other backends should not pay."""
    if resolved == "torch":
        return composite.KERNELS
    if resolved == "native":
        if native.KERNELS is None:
            raise RuntimeError(f"backend 'native' is not usable here: {native.load_error()}")
        return native.KERNELS
    if resolved == "triton":
        from fastgp.ops.triton import ops as triton_ops

        return triton_ops.KERNELS
    raise ValueError(f"not a concrete backend: {resolved!r} (expected triton, native or torch)")


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
