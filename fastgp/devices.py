"""Which torch devices this machine can run on, a check of a ``--device`` against them, and the
device-wide settings a training run may ask for.

Checked once, before any data is loaded or model built: an unavailable device otherwise fails
deep inside torch (``Torch not compiled with CUDA enabled``, ``invalid device ordinal``) after
the slow set-up, with a traceback that does not say what to pass instead.
"""

from __future__ import annotations

import os

import torch

AUTO = "auto"
# The values of CUBLAS_WORKSPACE_CONFIG with which cuBLAS is deterministic (CUDA ≥ 10.2); torch
# raises at the first CUDA matmul under torch.use_deterministic_algorithms(True) without one.
DETERMINISTIC_CUBLAS_WORKSPACES = (":4096:8", ":16:8")


def available_devices() -> list[str]:
    """``cpu``, then ``cuda`` and ``cuda:0`` … ``cuda:N-1`` when CUDA works, then ``mps``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{index}" for index in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` where CUDA is available, ``cpu`` otherwise; any other name unchanged.

    MPS is never chosen by ``auto``: fastgp's kernels and engine are tested on CPU and CUDA only.
    """
    if name != AUTO:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str, option: str = "--device", allow_auto: bool = False) -> str:
    """``name`` if it is one of :func:`available_devices` (or ``auto``, where ``allow_auto``); a
    ``ValueError`` that lists them otherwise."""
    available = available_devices() + ([AUTO] if allow_auto else [])
    if name in available:
        return name
    if name.split(":")[0] == "cuda" and torch.version.cuda is None:
        reason = "this torch is built without CUDA"
    elif name.split(":")[0] == "cuda" and not torch.cuda.is_available():
        reason = "no CUDA device is visible"
    else:
        reason = "no such device here"
    raise ValueError(f"{option} {name!r} is not available ({reason}); available: "
                     f"{', '.join(available)}")


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a copy from host memory to a GPU does not block the host.

    A plain ``.to("cuda")`` of pageable memory waits until the copy is done, and the copy waits
    for the work queued before it: a whole-device sync. Through pinned memory the copy is
    asynchronous (``non_blocking=True``); torch's pinned-memory cache keeps the staging block
    until the copy has finished, so the source may be freed at once.
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def make_deterministic() -> None:
    """Make every later op of this process deterministic, for runs that must repeat (and resume)
    bit for bit on CUDA: cuDNN's deterministic convolution algorithms without benchmarking (the
    fastest algorithm it picks may differ between runs), deterministic cuBLAS workspaces, and
    ``torch.use_deterministic_algorithms(True)``, which raises on ops that have no deterministic
    version instead of running one that is not.

    The settings are process-wide (like ``torch.manual_seed``). ``CUBLAS_WORKSPACE_CONFIG`` takes
    effect only if set before the process's first CUDA matmul; it is set here when absent, and an
    explicit value cuBLAS is not deterministic with is refused.
    """
    workspace = os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS_WORKSPACES[0])
    if workspace not in DETERMINISTIC_CUBLAS_WORKSPACES:
        raise ValueError(f"deterministic mode needs CUBLAS_WORKSPACE_CONFIG to be one of "
                         f"{', '.join(DETERMINISTIC_CUBLAS_WORKSPACES)}; the environment sets "
                         f"{workspace!r}")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
