"""Data-parallel training over ``torch.distributed`` (``torchrun --nproc_per_node=N -m fastgp train``).

Every process holds the same models and trains on its own shard of each global batch
(``batch_size / N`` samples drawn from its own random stream); after each backward the gradients
are averaged over processes with one all-reduce per model, so every process applies the same
update. Because each loss term is a mean over the batch and the shards have equal size, the
averaged gradient is the gradient of the global batch.

Why an explicit all-reduce rather than the ``DistributedDataParallel`` wrapper: DDP reduces in
hooks of autograd's backward, and the engine (:class:`fastgp.FusedCritic`) computes the critic's
gradients without autograd; with the Tier 1 penalty, DDP needs every parameter in the graph of
the double backward or it hangs. One flat all-reduce per model after the gradients are complete
does what DDP's buckets do, for both paths. gloo on CPU, NCCL on CUDA.

On CUDA each process trains on its own GPU, ``cuda:LOCAL_RANK``, made the *current* device before
the process group is created: NCCL binds each rank's communicator to it, ``all_gather_object``
stages its objects on it, and Triton launches kernels on the current device whatever device
their tensors are on. Left at ``cuda:0``, every rank would use GPU 0 there (NCCL fails or hangs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from fastgp.devices import resolve_device


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the job; the default is a single process (every call a no-op)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder: logs, figures, evaluations and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device: str) -> ProcessGroup:
        """Join the job torchrun describes in the environment (a single process otherwise).

        On CUDA this process's GPU becomes the current device before the process group is made,
        and NCCL's group is bound to it (``device_id``)."""
        if not launched_by_torchrun():
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        placement = cls(int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"]), local_rank)
        chosen = placement.select_device(device)
        if not dist.is_initialized():
            if chosen.type == "cuda":
                dist.init_process_group("nccl", device_id=chosen)
            else:
                dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    def close(self) -> None:
        """Leave the job, all processes together: rank 0 writes the final figures and report
        after the last collective, and a rank that tore down its gloo group while rank 0 was
        still connected aborted now and then ("terminate called without an active exception"
        in 2 of 20 runs of a 2-process job), failing the job after it had trained."""
        if self.distributed and dist.is_initialized():
            if dist.get_backend() == "nccl":  # on this process's GPU, not one torch guesses
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()
            dist.destroy_process_group()

    def select_device(self, device: str) -> torch.device:
        """The device this process trains on (``auto`` resolved); a GPU becomes the current one.

        ``cuda`` is this process's GPU: ``cuda:LOCAL_RANK`` in a job of several processes, the
        current device otherwise. An explicit ``cuda:N`` is refused in a job of several processes
        (they would all train on GPU N), and so is a GPU index this machine does not have.
        """
        chosen = torch.device(resolve_device(device))
        if chosen.type != "cuda":
            return chosen
        if self.distributed:
            if chosen.index is not None:
                raise ValueError(f"device {device!r} names one GPU for all {self.world_size} "
                                 "processes; give cuda: each process takes the GPU of its "
                                 "LOCAL_RANK")
            chosen = torch.device("cuda", self.local_rank)
        elif chosen.index is None:
            chosen = torch.device("cuda", torch.cuda.current_device())
        visible = torch.cuda.device_count()
        if chosen.index >= visible:
            source = f"LOCAL_RANK {self.local_rank}" if self.distributed else f"device {device!r}"
            raise ValueError(f"{source} asks for GPU {chosen.index}, and {visible} GPU(s) are "
                             "visible; start at most one process per GPU")
        torch.cuda.set_device(chosen)
        return chosen

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Make every process start from rank 0's weights and buffers."""
        if self.distributed:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def average_gradients(self, module: nn.Module) -> None:
        """``.grad ← mean over processes of .grad`` for every parameter that has one."""
        if not self.distributed:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def average(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over processes of a tensor of statistics (logging only)."""
        if not self.distributed:
            return values
        values = values.clone()
        dist.all_reduce(values)
        return values / self.world_size

    def concatenate(self, shard: torch.Tensor) -> torch.Tensor:
        """The per-sample values of all processes' shards (equal sizes), in rank order."""
        if not self.distributed:
            return shard
        shards = [torch.empty_like(shard) for _ in range(self.world_size)]
        dist.all_gather(shards, shard.contiguous())
        return torch.cat(shards)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process when it is true on one (a stop request must reach all ranks
        before the next collective, or the others would wait forever). Reading the result is a
        device sync: the trainer asks only at logged steps."""
        if not self.distributed:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, payload: object) -> list[object]:
        """Every process's ``payload``, in rank order (a list of one without distribution)."""
        if not self.distributed:
            return [payload]
        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, payload)
        return gathered
