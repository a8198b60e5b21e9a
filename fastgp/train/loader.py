"""Batches of an image folder, decoded by a :class:`~torch.utils.data.DataLoader`'s workers.

The order of the batches is that of the in-memory sets: each batch is ``batch_size`` indices drawn
uniformly with replacement by ``torch.randint`` on a seeded generator. :class:`InfiniteBatchSampler`
draws them in the main process, ahead of the training loop by as many batches as the workers
prefetch; its position is the generator's state *before* a batch, and a stream can start from any
such state. The trainer keeps the state of the next batch it takes (its data stream, which it
advances by the same draw for every batch it takes), so that a checkpoint holds the position of
the first batch not yet used, whatever the workers had read ahead; a resumed run starts the
sampler there and takes the same batches as an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import torch
import torch.utils.data

MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """``min(4, CPUs this process may use)``: data workers when none are asked for."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(MAX_DEFAULT_WORKERS, cpus)


class InfiniteBatchSampler(torch.utils.data.Sampler[list[int]]):
    """An endless stream of index batches, ``torch.randint(0, num_samples, (batch_size,))`` on a
    generator seeded with ``seed`` or set to ``state`` (a ``torch.Generator`` state: the position
    to start from). Every iteration starts again from that position."""

    def __init__(self, num_samples: int, batch_size: int, seed: int | None = None,
                 state: torch.Tensor | None = None) -> None:
        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples}, "
                             f"{batch_size}")
        if (seed is None) == (state is None):
            raise ValueError("give exactly one of seed and state")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.start = (torch.Generator().manual_seed(seed).get_state() if state is None
                      else state.clone())

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator()
        generator.set_state(self.start)
        while True:
            yield torch.randint(0, self.num_samples, (self.batch_size,),
                                generator=generator).tolist()


def _collate(items: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    indices, images = zip(*items, strict=True)
    return torch.tensor(indices), torch.stack(images)


class _Indexed(torch.utils.data.Dataset):
    """``(index, dataset[index])``: batches name the files they hold, for the trainer's check."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.dataset[index]


def _ignore_interrupts(worker_id: int) -> None:
    """Ctrl-C reaches the workers too; the trainer finishes its step on it (and needs their
    batches for that), then ends them itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StreamedBatches:
    """Batches of ``dataset`` in the order of ``data_stream`` (a ``torch.Generator``):
    :meth:`next` returns what ``torch.randint(0, N, (batch_size,), generator=data_stream)`` picks,
    decoded by ``num_workers`` worker processes (0: in this process), and advances
    ``data_stream`` by that draw, as the in-memory sets' ``sample`` does. The loader starts at the
    stream's state on the first call; :meth:`close` ends its workers (a later call starts anew
    from the stream's state then)."""

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int,
                 data_stream: torch.Generator, num_workers: int | None = None) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.data_stream = data_stream
        self.num_workers = default_workers() if num_workers is None else num_workers
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        self._batches: Iterator | None = None

    def _start(self) -> Iterator:
        sampler = InfiniteBatchSampler(len(self.dataset), self.batch_size,
                                       state=self.data_stream.get_state())
        workers = self.num_workers
        loader = torch.utils.data.DataLoader(
            _Indexed(self.dataset), batch_sampler=sampler, num_workers=workers,
            collate_fn=_collate, worker_init_fn=_ignore_interrupts if workers else None,
            # the loader draws its workers' base seed from this generator, not from the global
            # one, whose stream (the noise) must not depend on when a loader starts
            generator=torch.Generator().manual_seed(0),
            prefetch_factor=2 if workers else None)
        return iter(loader)

    def next(self) -> torch.Tensor:
        if self._batches is None:
            self._batches = self._start()
        indices, images = next(self._batches)
        expected = torch.randint(0, len(self.dataset), (self.batch_size,),
                                 generator=self.data_stream)
        if not torch.equal(indices, expected):  # the loader and the stream went apart
            raise RuntimeError("the data loader's batch is not the data stream's next batch")
        return images

    def close(self) -> None:
        """End the workers (they also end when this object is collected)."""
        batches, self._batches = self._batches, None
        if batches is not None and hasattr(batches, "_shutdown_workers"):
            batches._shutdown_workers()
