"""Data-parallel training: 2 CPU processes (gloo) produce the gradients of one process on the
same global batch, with the penalty on; `torchrun -m fastgp train` writes one run folder."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastgp.models import mlp
from fastgp.train import TrainConfig
from fastgp.train.distributed import ProcessGroup
from fastgp.train.objectives import Objectives

BATCH, WORLD = 8, 2


def _problem():
    """Critic, generator and one global batch (real, noise, ε), the same in every process."""
    torch.manual_seed(0)
    critic, generator = mlp(3, 1, hidden=16, depth=2), mlp(2, 3, hidden=16, depth=2)
    stream = torch.Generator().manual_seed(1)
    real = torch.randn(BATCH, 3, generator=stream)
    noise = torch.randn(BATCH, 2, generator=stream)
    eps = torch.rand(BATCH, generator=stream)
    return critic, generator, real, noise, eps


def _gradients(critic_step, rows, group):
    """Critic gradients (W-loss + GP) and generator gradients on ``rows`` of the global batch,
    averaged over the group."""
    critic, generator, real, noise, eps = _problem()
    config = TrainConfig(gp_weight=10.0, critic_step=critic_step).resolved("toy")
    objectives = Objectives(critic, config)
    with torch.no_grad():
        fake = generator(noise[rows])
    objectives.critic_step(real[rows], fake, True, eps=eps[rows])
    group.average_gradients(critic)
    critic.requires_grad_(False)
    objectives.generator_loss(critic(generator(noise[rows]))).backward()
    group.average_gradients(generator)
    return [p.grad.clone() for p in critic.parameters()] + [p.grad.clone() for p in generator.parameters()]


def _worker(rank, store_path, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD)
    group = ProcessGroup(rank, WORLD)
    shard = BATCH // WORLD
    rows = slice(rank * shard, (rank + 1) * shard)
    for path in ("engine", "tier1"):
        torch.save(_gradients(path, rows, group), os.path.join(out_dir, f"{path}_rank{rank}.pt"))
    group.close()


@pytest.fixture(scope="module")
def distributed_gradients(tmp_path_factory):
    """The gradients each of 2 processes ends with, both critic paths (one spawn)."""
    out_dir = tmp_path_factory.mktemp("distributed")
    mp.spawn(_worker, args=(str(out_dir / "store"), str(out_dir)), nprocs=WORLD, join=True)
    return out_dir


@pytest.mark.parametrize("critic_step", ["engine", "tier1"])
def test_two_processes_give_the_single_process_gradients(distributed_gradients, critic_step):
    out_dir = distributed_gradients
    single = _gradients(critic_step, slice(None), ProcessGroup())
    for rank in range(WORLD):
        distributed = torch.load(out_dir / f"{critic_step}_rank{rank}.pt")
        for got, expected in zip(distributed, single, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    # The shards' own gradients differ from the global ones: the averaging is what makes them equal.
    shard_only = _gradients(critic_step, slice(0, BATCH // WORLD), ProcessGroup())
    assert not torch.allclose(shard_only[0], single[0], rtol=1e-3)


def _torchrun(run, steps, *extra):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--standalone", "-m", "fastgp", "train", "--steps", str(steps), "--hidden", "16",
               "--eval-every", "2", "--eval-samples", "100", "--batch-size", "64",
               "--lr-schedule", "constant", "--out", str(run), "--no-progress", *extra]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_torchrun_trains_with_rank_zero_writing_the_run_folder(tmp_path):
    run = tmp_path / "run"
    result = _torchrun(run, 4)
    assert result.stdout.count("fastgp train:") == 1 and "2 processes" in result.stdout
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["processes"] == 2 and final["steps"] == 4
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["processes"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # own streams


def test_torchrun_resume_matches_an_uninterrupted_run(tmp_path):
    """2 + 2 steps resumed under torchrun equal 4 steps: every process restores its own streams."""
    _torchrun(tmp_path / "whole", 4)
    _torchrun(tmp_path / "split", 2)
    _torchrun(tmp_path / "split", 4, "--resume")
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert split["step"] == whole["step"] == 4
    for name in ("critic", "generator", "generator_average"):
        for key, tensor in whole[name].items():
            assert torch.equal(tensor, split[name][key]), (name, key)


def test_torchrun_into_a_refused_folder_stops_every_rank(tmp_path):
    """Rank 0 alone checks the run folder; the other ranks learn of its refusal instead of
    waiting for it in a collective."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--standalone", "-m", "fastgp", "train", "--steps", "2", "--hidden", "16",
               "--eval-samples", "64", "--batch-size", "64", "--out", str(run), "--no-progress"]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode != 0
    assert "holds files fastgp did not write (notes.txt)" in result.stderr
    assert sorted(path.name for path in run.iterdir()) == ["notes.txt"]
