"""Machine-independent counts of what a piece of torch code dispatches.

``OpCounter`` is a ``TorchDispatchMode``: it sees every aten op that reaches the dispatcher,
including those of the double backward, and records

- ``ops``: every aten op dispatched (views and allocations included);
- ``kernels``: ops that run a kernel on a GPU — not views (``t``, ``view``, ``expand``, ``detach``)
  and not bare allocations (``empty``) — each as a :class:`~fastgp.perf.roofline.KernelRecord`;
- ``flops``: from ``torch.utils.flop_counter.flop_registry`` (matmuls and convolutions);
- bytes read + written, split into GEMM (ops with a FLOP formula) and non-GEMM ops, counting
  each tensor's distinct elements once (a broadcast input is read once);
- ``peak_bytes``: the high-water mark of bytes held by tensors the counted code allocated,
  tracked through storage finalizers, so it does not depend on the allocator or the device.

``FlopCounterMode`` itself cannot be used here: on torch 2.13 its module tracker breaks
``autograd.grad`` ("A leaf node was passed to _will_engine_execute_node").
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from fastgp.perf.roofline import KernelRecord

aten = torch.ops.aten

# Ops that allocate without computing, or only bookkeep: no kernel launch on a GPU.
_NO_KERNEL = {
    aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default,
    aten.new_empty.default, aten.new_empty_strided.default, aten.lift_fresh.default,
}
_CONVOLUTIONS = {aten.convolution, aten.convolution_backward, aten._convolution,
                 aten.cudnn_convolution, aten._slow_conv2d_forward, aten.convolution_overrideable}


def distinct_bytes(tensor: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor addresses (broadcast dimensions count once)."""
    if tensor.numel() == 0:
        return 0
    elements = math.prod(size for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
                         if stride != 0)
    return elements * tensor.element_size()


def _tensors(tree) -> list[torch.Tensor]:
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


@dataclass
class Counts:
    """What one counted region dispatched (see the module docstring)."""

    ops: int = 0
    flops: int = 0
    gemm_bytes: int = 0
    non_gemm_bytes: int = 0
    peak_bytes: int = 0
    kernels: list[KernelRecord] = field(default_factory=list)
    op_histogram: Counter = field(default_factory=Counter)

    @property
    def kernel_count(self) -> int:
        return len(self.kernels)

    def summary(self) -> dict[str, int]:
        return {"ops": self.ops, "kernels": self.kernel_count, "flops": self.flops,
                "gemm_bytes": self.gemm_bytes, "non_gemm_bytes": self.non_gemm_bytes,
                "peak_bytes": self.peak_bytes}


class OpCounter(TorchDispatchMode):
    """Count ops, kernels, FLOPs, bytes and peak live bytes of the code run inside ``with``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()
        self._live: dict[int, int] = {}
        self._live_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        counts = self.counts
        counts.ops += 1
        counts.op_histogram[str(func)] += 1
        if func.is_view or func in _NO_KERNEL:
            return out
        inputs, outputs = _tensors((args, kwargs)), _tensors(out)
        moved = sum(distinct_bytes(t) for t in inputs) + sum(distinct_bytes(t) for t in outputs)
        packet = _flop_packet(func._overloadpacket)
        flops = int(flop_registry[packet](*args, **kwargs, out_val=out)) if packet in flop_registry else 0
        if packet in flop_registry:
            counts.flops += flops
            counts.gemm_bytes += moved
        else:
            counts.non_gemm_bytes += moved
        dtype = (outputs or inputs)[0].dtype if (outputs or inputs) else torch.float32
        counts.kernels.append(KernelRecord(str(func), flops, moved, dtype, packet in _CONVOLUTIONS))
        self._track_allocations(inputs, outputs)
        return out

    def _track_allocations(self, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        input_pointers = {t.untyped_storage().data_ptr() for t in inputs if t.numel()}
        for tensor in outputs:
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
            if storage.nbytes() == 0 or pointer in input_pointers or pointer in self._live:
                continue  # in-place results and views of storages that already exist
            self._live[pointer] = storage.nbytes()
            self._live_bytes += storage.nbytes()
            self.counts.peak_bytes = max(self.counts.peak_bytes, self._live_bytes)
            weakref.finalize(storage, self._release, pointer)

    def _release(self, pointer: int) -> None:
        self._live_bytes -= self._live.pop(pointer, 0)


def _flop_packet(packet):
    """The op whose FLOP formula applies: in-place ``addmm_`` counts as ``addmm`` (the registry
    lists only the out-of-place ops, but the arithmetic is the same)."""
    name = packet.__name__
    if packet not in flop_registry and name.endswith("_") and hasattr(aten, name[:-1]):
        return getattr(aten, name[:-1])
    return packet


def count(function, *args, **kwargs) -> tuple[Counts, object]:
    """Run ``function(*args, **kwargs)`` under an :class:`OpCounter`; returns ``(counts, result)``."""
    with OpCounter() as counter:
        result = function(*args, **kwargs)
    return counter.counts, result
