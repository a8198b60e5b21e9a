"""The memory layout the fastgp kernels read and write, shared by the real ops and their fakes.

Every kernel addresses a batch as ``B`` samples of ``M`` elements laid out *sample-major*:
element ``j`` of sample ``i`` at offset ``i·M + j`` from the data pointer. Contiguous and
channels_last tensors qualify and are used in place; any other tensor is copied once into a
contiguous one. The rule for outputs, on every backend::

    output strides = input strides    if the input is sample-major
                   = contiguous       otherwise

(for ``interpolate``, the input is ``real``; ``fake`` is brought to ``real``'s layout). The fake
kernels call :func:`output_like` too, so the strides ``torch.compile`` plans for are the strides
the kernels return: Inductor asserts them, and a mismatch fails the compiled step. The native
kernels implement the same rule in ``kernels/include/fastgp/host.h``; the tests compare real and
fake strides on every backend.
"""

from __future__ import annotations

import torch


def is_sample_major(tensor: torch.Tensor) -> bool:
    """Dense, no overlap, and each sample one block: offset = i·M + j (contiguous or
    channels_last / channels_last_3d; a tensor without elements is contiguous)."""
    if tensor.is_contiguous():
        return True
    if tensor.dim() in (4, 5):
        layout = torch.channels_last if tensor.dim() == 4 else torch.channels_last_3d
        return tensor.is_contiguous(memory_format=layout)
    return False


def sample_major(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself when it is sample-major, else a contiguous copy."""
    return tensor if is_sample_major(tensor) else tensor.contiguous()


def output_like(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialized output for input ``tensor``, in the layout of ``sample_major(tensor)``
    (no copy of ``tensor``): its strides when it is sample-major, contiguous strides otherwise.

    The strides are given explicitly rather than through ``empty_like``, whose
    ``preserve_format`` may place the strides of size-1 dimensions differently on real and fake
    tensors.
    """
    dtype = tensor.dtype if dtype is None else dtype
    if is_sample_major(tensor):
        return tensor.new_empty_strided(tensor.shape, tensor.stride(), dtype=dtype)
    return tensor.new_empty(tensor.shape, dtype=dtype)


def same_addressing(a: torch.Tensor, b: torch.Tensor) -> bool:
    """One flat offset reaches the same element of ``a`` and ``b``: equal strides on every
    dimension of size > 1 (the stride of a size-1 dimension is never used)."""
    return all(stride_a == stride_b or size < 2
               for stride_a, stride_b, size in zip(a.stride(), b.stride(), a.shape, strict=True))


def matching_pair(a: torch.Tensor, b: torch.Tensor,
                  names: tuple[str, str] = ("a", "b")) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` sample-major and ``b`` addressed like it, so one flat offset reads both.

    ``b`` is copied into ``a``'s layout when they differ (one copy of ``b`` only; the output,
    allocated by :func:`output_like` of ``a``, keeps ``a``'s layout).
    """
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    a = sample_major(a)
    if not same_addressing(a, b):
        b = output_like(a, dtype=b.dtype).copy_(b)
    return a, b
