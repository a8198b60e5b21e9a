"""Which torch devices this machine can run on, and a check of a ``--device`` against them.

Checked once, before any data is loaded or model built: an unavailable device otherwise fails
deep inside torch (``Torch not compiled with CUDA enabled``, ``invalid device ordinal``) after
the slow set-up, with a traceback that does not say what to pass instead.
"""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """``cpu``, then ``cuda`` and ``cuda:0`` … ``cuda:N-1`` when CUDA works, then ``mps``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{index}" for index in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(name: str, option: str = "--device") -> str:
    """``name`` if it is one of :func:`available_devices`; a ``ValueError`` that lists them
    otherwise."""
    available = available_devices()
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
