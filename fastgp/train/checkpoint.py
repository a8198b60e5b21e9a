"""A run's checkpoint: writing it, resuming a run from it, and loading a finished run's generator.

``checkpoint.pt`` in the run folder is the latest checkpoint (written atomically by
:mod:`fastgp.train.run_folder`); ``checkpoints/step_NNNNNNNN.pt`` keep the last
``keep_checkpoints`` of them. A checkpoint is a dict of plain tensors and numbers (loaded with
``weights_only=True``) holding everything a resumed run needs to continue exactly: the models,
the weight average, the optimizers, the fp16 loss scalers, the step, the training time and the
random streams of every process. The learning-rate schedule is a function of the step, so it is
not saved.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fastgp.train import run_folder
from fastgp.train.config import TrainConfig
from fastgp.train.networks import build_models

CHECKPOINT_FORMAT = 2
# Options that change neither the models nor the random streams: a resumed run may set them anew.
# (With the linear schedule a new ``steps`` changes the learning rates from the resumed step on.)
RESUMABLE_CHANGES = ("steps", "log_every", "eval_every", "keep_checkpoints", "data_workers")
# What every checkpoint of this format holds (a resumed run reads them all).
RESUME_KEYS = ("step", "seconds", "config", "generator", "critic", "generator_optimizer",
               "critic_optimizer", "rng")


def random_state(data_stream: torch.Generator, device: torch.device) -> dict:
    """This process's random streams: the global generator (noise and ε), the data stream (real
    samples) and, on CUDA, the device's generator. Every process of a job gathers its own into
    the checkpoint, since each draws its own shard."""
    rng = {"torch": torch.get_rng_state(), "data": data_stream.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def save(out_dir: Path, *, step: int, seconds: float, config: TrainConfig,
         sample_shape: tuple[int, ...], generator: nn.Module, critic: nn.Module,
         generator_optimizer: torch.optim.Optimizer, critic_optimizer: torch.optim.Optimizer,
         average: AveragedModel | None, scalers: dict[str, torch.amp.GradScaler] | None,
         rng_per_process: list[dict], keep: int) -> None:
    """Write ``out_dir/checkpoint.pt`` atomically, and keep a copy as
    ``checkpoints/step_NNNNNNNN.pt`` (the ``keep`` newest copies stay).

    ``seconds`` is the training time so far; ``scalers`` the fp16 loss scalers by role
    (``critic``, ``generator``), None without them; ``rng_per_process`` every process's
    :func:`random_state`, in rank order. Rank 0 alone calls it, after the gather."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "seconds": seconds,
        "config": dataclasses.asdict(config),
        "sample_shape": list(sample_shape),
        "generator": generator.state_dict(),
        "critic": critic.state_dict(),
        "generator_optimizer": generator_optimizer.state_dict(),
        "critic_optimizer": critic_optimizer.state_dict(),
        "processes": len(rng_per_process),
        "rng": rng_per_process,
    }
    if average is not None:
        state["generator_average"] = average.state_dict()
    if scalers is not None:
        state["scalers"] = {role: scaler.state_dict() for role, scaler in scalers.items()}
    latest = out_dir / run_folder.CHECKPOINT_FILE
    run_folder.save_checkpoint(latest, state)
    run_folder.keep_history(latest, out_dir / run_folder.CHECKPOINT_HISTORY,
                            f"step_{step:08d}.pt", keep)


def load_resumable(out_dir: Path, config: TrainConfig, world_size: int) -> dict:
    """The checkpoint of ``out_dir``, checked to be one a run of ``config`` on ``world_size``
    processes continues exactly (same format, same config but for :data:`RESUMABLE_CHANGES`,
    steps left to train, as many processes); a ValueError that says why not otherwise."""
    path = out_dir / run_folder.CHECKPOINT_FILE
    state = run_folder.load_checkpoint(path)
    if state.get("format") != CHECKPOINT_FORMAT or "processes" not in state:
        raise ValueError(f"checkpoint {path} was written by another version of fastgp "
                         f"(format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}); "
                         "it cannot be resumed")
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path} is not a fastgp checkpoint: missing keys {missing}; it "
                         "cannot be resumed")
    differing = config.changes_from(dict(state["config"]), RESUMABLE_CHANGES)
    if differing:
        changes = ", ".join(differing)
        raise ValueError(f"cannot resume {out_dir}: the config differs ({changes}); only "
                         f"{', '.join(RESUMABLE_CHANGES)} may change")
    step = int(state["step"])
    if config.steps <= step:
        # Nothing would be trained: the run would evaluate and report again, under a
        # step count that is not the one trained.
        raise ValueError(f"cannot resume {out_dir}: its checkpoint is at step {step} and "
                         f"steps is {config.steps}; give --steps above {step} to train "
                         "further")
    if state["processes"] != world_size:
        raise ValueError(f"cannot resume {out_dir}: it ran on {state['processes']} "
                         f"processes, this job has {world_size}; each process's "
                         "random streams are part of the checkpoint")
    return state


def restore(state: dict, *, rank: int, generator: nn.Module, critic: nn.Module,
            generator_optimizer: torch.optim.Optimizer, critic_optimizer: torch.optim.Optimizer,
            average: AveragedModel | None, scalers: dict[str, torch.amp.GradScaler] | None,
            data_stream: torch.Generator, device: torch.device) -> tuple[int, float]:
    """Load a checked checkpoint (:func:`load_resumable`) into the run's models, optimizers,
    scalers and process ``rank``'s random streams, in place; returns ``(step, seconds)``, where
    the run continues."""
    generator.load_state_dict(state["generator"])
    critic.load_state_dict(state["critic"])
    if average is not None:
        average.load_state_dict(state["generator_average"])
    if scalers is not None:
        for role, scaler in scalers.items():
            scaler.load_state_dict(state["scalers"][role])
    generator_optimizer.load_state_dict(state["generator_optimizer"])
    critic_optimizer.load_state_dict(state["critic_optimizer"])
    rng = state["rng"][rank]
    torch.set_rng_state(rng["torch"])
    data_stream.set_state(rng["data"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    return int(state["step"]), float(state["seconds"])


def load_generator(run_dir: Path) -> tuple[nn.Module, TrainConfig]:
    """The sampling generator of a run folder (the weight average when the run kept one), in
    eval mode on the CPU, with its config. The config is the one saved in the checkpoint with the
    weights, not ``config.json``, which a user may edit."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / run_folder.CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{run_dir} is not a fastgp run folder: {checkpoint.name} is missing")
    state = run_folder.load_checkpoint(checkpoint, required=("format", "sample_shape", "generator"))
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"checkpoint {checkpoint} holds no config (format "
                         f"{state.get('format')!r}, written by another version of fastgp); "
                         "it cannot be sampled")
    config = TrainConfig.from_dict(state["config"])
    generator, _ = build_models(config, tuple(state["sample_shape"]))
    try:
        if "generator_average" in state:
            average = AveragedModel(generator, use_buffers=True)
            average.load_state_dict(state["generator_average"])
            generator = average.module
        else:
            generator.load_state_dict(state["generator"])
    except RuntimeError as error:  # load_state_dict: missing, unexpected or mis-shaped weights
        # the first mismatch is enough (the message lists every layer)
        first = " ".join(line.strip() for line in str(error).splitlines()[:2])
        raise ValueError(f"the weights in {checkpoint} do not fit the models of its config "
                         f"(was it edited?): {first}") from error
    return generator.eval(), config


@torch.no_grad()
def sample(run_dir: Path, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` samples from a run's generator, shape ``(n, *sample_shape)``, reproducible for a
    ``seed``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    generator, config = load_generator(run_dir)
    noise = torch.randn(n, config.noise_dim, generator=torch.Generator().manual_seed(seed))
    return generator(noise)
