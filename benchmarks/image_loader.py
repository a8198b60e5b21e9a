"""Images per second of a streamed image folder: a folder of small PNGs read through the
trainer's loader with 0, 1, 2 … worker processes, and the in-memory decode for comparison.

    .venv/bin/python benchmarks/image_loader.py --images 400 --size 32 --workers 0 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastgp.train.image_data import load_image_folder, scan_image_folder
from fastgp.train.loader import StreamedBatches


def make_folder(path: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path / f"{index:06d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        make_folder(Path(folder), args.images, args.size)
        start = time.perf_counter()
        load_image_folder(folder)
        seconds = time.perf_counter() - start
        print(f"in memory: {args.images / seconds:8.0f} images/s (decode of the whole folder)")
        start = time.perf_counter()
        dataset = scan_image_folder(folder)
        print(f"scan:      {args.images / (time.perf_counter() - start):8.0f} files/s (headers)")
        for workers in args.workers:
            batches = StreamedBatches(dataset, args.batch_size, torch.Generator().manual_seed(0),
                                      num_workers=workers)
            batches.next()  # the workers' start is not throughput
            start = time.perf_counter()
            for _ in range(args.batches):
                batches.next()
            seconds = time.perf_counter() - start
            batches.close()
            print(f"workers {workers}: {args.batches * args.batch_size / seconds:8.0f} images/s")


if __name__ == "__main__":
    main()
