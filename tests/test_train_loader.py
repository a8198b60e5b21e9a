"""An image folder streams through a DataLoader: the same batches with and without workers, the
same as the in-memory set's, and exactly resumable."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from fastgp.train import TrainConfig, Trainer
from fastgp.train import image_data as image_data_module
from fastgp.train.image_data import ImageFolder, load_dataset, load_image_folder, scan_image_folder
from fastgp.train.loader import InfiniteBatchSampler, StreamedBatches
from fastgp.train.run_folder import load_checkpoint

TIMINGS = {"seconds", "seconds_per_step"}


def _png_folder(path, count=30, size=16, mode="RGB"):
    path.mkdir()
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path / f"{index:03d}.png")
    return path


def _batches(folder, workers, seed=5, count=7, batch=6):
    stream = torch.Generator().manual_seed(seed)
    batches = StreamedBatches(folder, batch, stream, num_workers=workers)
    try:
        return [batches.next() for _ in range(count)], stream.get_state()
    finally:
        batches.close()


def test_folder_holds_paths_only_and_is_not_decoded_by_the_scan(tmp_path, monkeypatch):
    root = _png_folder(tmp_path / "images")
    decoded = []
    original = image_data_module._open_image
    monkeypatch.setattr(image_data_module, "_open_image",
                        lambda file: decoded.append(file) or original(file))
    folder = load_dataset(str(root))
    assert isinstance(folder, ImageFolder) and isinstance(folder, torch.utils.data.Dataset)
    assert decoded == []  # 8-bit images: the scan reads headers only
    assert not any(isinstance(value, torch.Tensor | np.ndarray) for value in vars(folder).values())
    assert len(folder) == folder.num_samples == 30 and folder.sample_shape == (3, 16, 16)
    folder[3]
    assert decoded == [folder.files[3]]


@pytest.mark.parametrize("mode, image_size", [("RGB", None), ("L", 8)])
def test_folder_items_are_the_in_memory_images(tmp_path, mode, image_size):
    root = _png_folder(tmp_path / "images", count=5, mode=mode)
    memory = load_image_folder(root, image_size)
    folder = scan_image_folder(root, image_size)
    assert folder.sample_shape == memory.sample_shape
    assert torch.equal(torch.stack([folder[i] for i in range(len(folder))]), memory.images)
    generator = torch.Generator()
    assert torch.equal(folder.sample(9, generator.manual_seed(1)),
                       memory.sample(9, generator.manual_seed(1)))


def test_two_workers_give_the_batches_of_none_and_of_the_in_memory_set(tmp_path):
    root = _png_folder(tmp_path / "images")
    folder = scan_image_folder(root)
    with_workers, state_workers = _batches(folder, workers=2)
    without, state_without = _batches(folder, workers=0)
    # today's path: the whole folder in memory, sampled on the same stream
    memory = load_image_folder(root)
    stream = torch.Generator().manual_seed(5)
    in_memory = [memory.sample(6, stream) for _ in range(7)]
    for a, b, c in zip(with_workers, without, in_memory, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    # the stream is where the in-memory sampling leaves it, not where the workers read ahead to
    assert torch.equal(state_workers, stream.get_state())
    assert torch.equal(state_without, stream.get_state())


def test_sampler_starts_at_a_given_position():
    sampler = InfiniteBatchSampler(50, 4, seed=3)
    stream = iter(sampler)
    first = [next(stream) for _ in range(5)]
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        torch.randint(0, 50, (4,), generator=generator)
    resumed = iter(InfiniteBatchSampler(50, 4, state=generator.get_state()))
    assert [next(resumed) for _ in range(3)] == first[2:]
    assert all(0 <= index < 50 for batch in first for index in batch)
    with pytest.raises(ValueError, match="exactly one"):
        InfiniteBatchSampler(50, 4)


def _folder_config(root, steps, workers):
    return TrainConfig(dataset=str(root), steps=steps, eval_every=3, eval_samples=16, width=8,
                       batch_size=8, log_every=1, lr_schedule="constant", data_workers=workers)


def _recording(monkeypatch):
    batches = []
    original = Trainer._real_batch

    def record(self):
        batch = original(self)
        batches.append(batch.clone())
        return batch

    monkeypatch.setattr(Trainer, "_real_batch", record)
    return batches


def test_resumed_folder_run_takes_the_batches_of_an_uninterrupted_one(tmp_path, monkeypatch):
    root = _png_folder(tmp_path / "images")
    batches = _recording(monkeypatch)
    whole = Trainer(_folder_config(root, 6, workers=0), tmp_path / "whole", progress=False)
    whole.run()
    whole_batches = list(batches)
    batches.clear()
    Trainer(_folder_config(root, 3, workers=2), tmp_path / "split", progress=False).run()
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 3
    first_half = list(batches)
    batches.clear()
    resumed = Trainer(_folder_config(root, 6, workers=2), tmp_path / "split", progress=False,
                      resume=True)
    resumed.run()
    split_batches = first_half + batches
    assert len(split_batches) == len(whole_batches) == 6 * whole.config.n_critic
    for a, b in zip(whole_batches, split_batches, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(whole.critic.parameters(), resumed.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    rows = [_metrics_without_timings(tmp_path / name) for name in ("whole", "split")]
    assert rows[0] == rows[1] and len(rows[0]) == 6


def _metrics_without_timings(run_dir):
    """metrics.csv of a run with the wall-clock columns left out (they differ between runs)."""
    with open(run_dir / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k not in TIMINGS}
                for row in csv.DictReader(handle)]


def test_negative_data_workers_are_refused():
    with pytest.raises(ValueError, match="data_workers"):
        TrainConfig(data_workers=-1).validate()


def test_streamed_folder_run_equals_the_in_memory_run(tmp_path, monkeypatch):
    """The batches and the run are those of the folder decoded into memory (the path of the
    arrays and of earlier versions) for the same seed."""
    root = _png_folder(tmp_path / "images")
    streamed = Trainer(_folder_config(root, 4, workers=2), tmp_path / "streamed", progress=False)
    assert streamed.batches is not None
    streamed.run()
    monkeypatch.setattr("fastgp.train.trainer.load_dataset",
                        lambda spec, image_size: load_image_folder(spec, image_size))
    memory = Trainer(_folder_config(root, 4, workers=2), tmp_path / "memory", progress=False)
    assert memory.batches is None
    memory.run()
    for a, b in zip(streamed.sampler.parameters(), memory.sampler.parameters(), strict=True):
        assert torch.equal(a, b)
    rows = [_metrics_without_timings(tmp_path / name) for name in ("streamed", "memory")]
    assert rows[0] == rows[1] and len(rows[0]) == 4


def test_a_checkpoint_of_an_earlier_version_resumes(tmp_path):
    """Checkpoints written before folders streamed have no data_workers in their config; the
    data stream's state they hold is the position the loader starts from."""
    root = _png_folder(tmp_path / "images")
    whole = Trainer(_folder_config(root, 6, workers=None), tmp_path / "whole", progress=False)
    whole.run()
    Trainer(_folder_config(root, 3, workers=None), tmp_path / "split", progress=False).run()
    path = tmp_path / "split" / "checkpoint.pt"
    state = load_checkpoint(path)
    del state["config"]["data_workers"]
    torch.save(state, path)
    resumed = Trainer(_folder_config(root, 6, workers=1), tmp_path / "split", progress=False,
                      resume=True)
    resumed.run()
    for a, b in zip(whole.sampler.parameters(), resumed.sampler.parameters(), strict=True):
        assert torch.equal(a, b)
