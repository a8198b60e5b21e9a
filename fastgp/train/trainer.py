"""WGAN-GP training on the toy sets (Gulrajani et al. 2017, Algorithm 1).

Each generator step is preceded by ``n_critic`` critic steps; every critic step draws fresh real
samples, fresh noise and fresh ε. Defaults are the paper's toy settings: λ = 0.1, n_critic = 5,
Adam with lr 1e-4 and betas (0.5, 0.9) as in its released code, batch 256, ReLU MLPs with three
hidden layers and noise of dimension 2 — except the width: 256 units instead of the paper's 512,
measured to cover all 8 modes of 8gaussians in 2,000 steps within 2.5 minutes on 2 CPU cores
(``hidden=512`` is 2.7× slower per step). Pass ``hidden=512`` for the paper's model. The critic
step runs on :class:`fastgp.FusedCritic` when it supports the critic (``critic_step="auto"``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from fastgp.engine import FusedCritic, UnsupportedLayerError
from fastgp.losses import (
    critic_wasserstein_loss,
    generator_wasserstein_loss,
    wasserstein_estimate,
)
from fastgp.penalty import gradient_penalty
from fastgp.train import run_folder
from fastgp.train.data import ToyDataset, toy_dataset
from fastgp.train.metrics import mode_coverage
from fastgp.train.models import toy_critic, toy_generator
from fastgp.train.plots import plot_toy_samples, plot_training_curves

CRITIC_STEPS = ("auto", "engine", "tier1")
CHECKPOINT_FORMAT = 1
# Options that change neither the models nor the random streams: a resumed run may set them anew.
RESUMABLE_CHANGES = ("steps", "log_every", "eval_every", "keep_checkpoints")

LOG_COLUMNS = [
    "step", "critic_loss", "generator_loss", "w_estimate", "penalty",
    "grad_norm_mean", "grad_norm_std", "seconds",
]


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as the run folder's ``config.json``."""

    dataset: str = "8gaussians"
    steps: int = 2000
    batch_size: int = 256
    n_critic: int = 5
    gp_weight: float = 0.1
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    hidden: int = 256
    depth: int = 3
    noise_dim: int = 2
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500
    eval_samples: int = 2500
    device: str = "cpu"
    critic_step: str = "auto"  # engine (FusedCritic), tier1 (gradient_penalty), auto: engine if it can
    keep_checkpoints: int = 3  # step-numbered copies kept in checkpoints/ besides checkpoint.pt

    def validate(self) -> None:
        positive = ["steps", "batch_size", "n_critic", "hidden", "depth", "noise_dim",
                    "log_every", "eval_every", "eval_samples", "keep_checkpoints"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.critic_step not in CRITIC_STEPS:
            raise ValueError(f"critic_step must be one of {CRITIC_STEPS}, got {self.critic_step!r}")
        if self.lr <= 0 or self.gp_weight < 0:
            raise ValueError(f"lr must be > 0 and gp_weight >= 0, got {self.lr} and {self.gp_weight}")
        toy_dataset(self.dataset)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


def build_generator(config: TrainConfig) -> nn.Module:
    return toy_generator(config.noise_dim, 2, config.hidden, config.depth)


def build_critic(config: TrainConfig) -> nn.Module:
    return toy_critic(2, config.hidden, config.depth)


class Trainer:
    """Runs one WGAN-GP training job and writes its run folder."""

    def __init__(self, config: TrainConfig, out_dir: Path, progress: bool = True,
                 resume: bool = False) -> None:
        config.validate()
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        self.data = toy_dataset(config.dataset)
        self.data_stream = torch.Generator().manual_seed(config.seed + 1)
        self.generator = build_generator(config).to(self.device)
        self.critic = build_critic(config).to(self.device)
        betas = (config.beta1, config.beta2)
        # Fused Adam: the same update in one kernel (3× faster than the per-parameter loop here).
        self.generator_optimizer = torch.optim.Adam(self.generator.parameters(), config.lr,
                                                    betas=betas, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), config.lr, betas=betas,
                                                 fused=True)
        self.fused_critic = self._engine_for(self.critic)
        # One fixed noise batch and one fixed real batch for every evaluation, so that
        # evaluations differ only by the model.
        evaluation_stream = torch.Generator().manual_seed(config.seed + 2)
        self.eval_noise = torch.randn(config.eval_samples, config.noise_dim, generator=evaluation_stream)
        self.eval_real = self.data.sample(config.eval_samples, evaluation_stream)
        self.step = 0
        self.seconds_before = 0.0  # training time of the run before a resume
        self._start: float | None = None  # perf_counter origin of the training-time axis
        self._stop_requested = False  # set by Ctrl-C / SIGTERM: stop after the current step
        self.resumed = resume
        if resume:
            self._restore(run_folder.load_checkpoint(self.out_dir / run_folder.CHECKPOINT_FILE))

    def _engine_for(self, critic: nn.Module) -> FusedCritic | None:
        """The engine for the critic step, or None for Tier 1 (``config.critic_step``)."""
        if self.config.critic_step == "tier1":
            return None
        try:
            return FusedCritic(critic)
        except UnsupportedLayerError:
            if self.config.critic_step == "engine":
                raise
            return None

    @property
    def critic_step_name(self) -> str:
        return "engine (FusedCritic)" if self.fused_critic is not None else "tier1 (gradient_penalty)"

    def run(self) -> dict:
        """Train for ``config.steps`` generator steps; returns the final metrics."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        run_folder.write_json(self.out_dir / run_folder.CONFIG_FILE, dataclasses.asdict(self.config))
        log = run_folder.MetricsLog(self.out_dir / run_folder.METRICS_CSV, LOG_COLUMNS,
                                    resume_after_step=self.step if self.resumed else None)
        start = self._start = time.perf_counter() - self.seconds_before
        # Redraw often on a terminal, rarely in a log file (CI, nohup) so logs stay readable.
        redraw_seconds = 0.1 if sys.stderr.isatty() else 10.0
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not self.progress,
                   unit="step", dynamic_ncols=True, mininterval=redraw_seconds)
        interrupted = False
        try:
            with self._stop_between_steps():
                while self.step < self.config.steps and not self._stop_requested:
                    row = self._train_step()
                    self.step += 1
                    bar.update(1)
                    if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                        row |= {"step": self.step, "seconds": time.perf_counter() - start}
                        self._check_finite(row)
                        log.append(row)
                        bar.set_postfix(W=f"{row['w_estimate']:.4f}", gp=f"{row['penalty']:.4f}")
                    if self.step % self.config.eval_every == 0 and self.step < self.config.steps:
                        self.evaluate(f"samples_step{self.step:06d}.png")
                        self.save_checkpoint()
            interrupted = self._stop_requested
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            log.close()
        seconds = time.perf_counter() - start
        self.save_checkpoint()
        final = self.evaluate("samples.png") | {
            "steps": self.step, "seconds": seconds, "interrupted": interrupted,
            "critic_step": self.critic_step_name,
        }
        run_folder.write_json(self.out_dir / run_folder.FINAL_METRICS, final)
        plot_training_curves(self.out_dir / "curves.png", self.out_dir / run_folder.METRICS_CSV)
        if interrupted:
            raise KeyboardInterrupt
        return final

    @contextlib.contextmanager
    def _stop_between_steps(self):
        """Ctrl-C and SIGTERM end the run after the current step, so the checkpoint written on
        the way out is one a resumed run continues exactly; a second Ctrl-C stops at once."""
        self._stop_requested = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _train_step(self) -> dict[str, float]:
        config = self.config
        for _ in range(config.n_critic):
            real = self.data.sample(config.batch_size, self.data_stream).to(self.device)
            noise = torch.randn(config.batch_size, config.noise_dim, device=self.device)
            with torch.no_grad():
                fake = self.generator(noise)
            critic_loss, w_estimate, penalty, norms = self._critic_step(real, fake)
            self.critic_optimizer.step()

        self.critic.requires_grad_(False)  # the generator step needs no critic weight gradients
        noise = torch.randn(config.batch_size, config.noise_dim, device=self.device)
        generator_loss = generator_wasserstein_loss(self.critic(self.generator(noise)))
        self.generator_optimizer.zero_grad(set_to_none=True)
        generator_loss.backward()
        self.generator_optimizer.step()
        self.critic.requires_grad_(True)
        return {
            "critic_loss": critic_loss.item(),
            "generator_loss": generator_loss.item(),
            "w_estimate": w_estimate.item(),
            "penalty": penalty.item(),
            "grad_norm_mean": norms.mean().item(),
            "grad_norm_std": norms.std().item() if norms.numel() > 1 else 0.0,
        }

    def _critic_step(self, real: torch.Tensor, fake: torch.Tensor):
        """Loss, W estimate, penalty and gradient norms; leaves the gradients in ``.grad``."""
        weight = self.config.gp_weight
        if self.fused_critic is not None:
            result = self.fused_critic.step(real, fake, weight=weight)
            return result.loss, result.wasserstein, result.penalty, result.norms
        real_scores, fake_scores = self.critic(real), self.critic(fake)
        penalty, norms = gradient_penalty(self.critic, real, fake, weight=weight,
                                          return_norms=True, check_inputs=False)
        critic_loss = critic_wasserstein_loss(real_scores, fake_scores) + penalty
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        return (critic_loss.detach(), wasserstein_estimate(real_scores, fake_scores), penalty.detach(),
                norms)

    def _check_finite(self, row: dict[str, float]) -> None:
        bad = [name for name, value in row.items() if not math.isfinite(value)]
        if bad:
            raise FloatingPointError(f"training diverged at step {self.step}: {bad} not finite")

    @torch.no_grad()
    def evaluate(self, figure_name: str) -> dict:
        """Metrics of the fixed evaluation batch, and a figure of it over real data."""
        self.generator.eval()
        samples = self.generator(self.eval_noise.to(self.device)).cpu()
        self.generator.train()
        metrics: dict = {"step": self.step}
        if isinstance(self.data, ToyDataset):
            metrics |= mode_coverage(samples, self.data.centres, self.data.sigma).as_dict()
        title = f"{self.config.dataset}, step {self.step}"
        if "modes_covered" in metrics:
            title += (f": {metrics['modes_covered']}/{metrics['num_modes']} modes, "
                      f"{100 * metrics['high_quality_share']:.1f}% high quality")
        critic_cpu = lambda points: self.critic(points.to(self.device)).cpu()  # noqa: E731
        plot_toy_samples(self.out_dir / figure_name, self.eval_real, samples, critic_cpu, title)
        return metrics

    def save_checkpoint(self) -> None:
        """Everything a resumed run needs to continue exactly: models, optimizers, step, time and
        the random streams (noise and ε from the global generator, real samples from the data
        stream)."""
        rng = {"torch": torch.get_rng_state(), "data": self.data_stream.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        start = self._start
        run_folder.save_checkpoint(self.out_dir / run_folder.CHECKPOINT_FILE, {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "seconds": self.seconds_before if start is None else time.perf_counter() - start,
            "config": dataclasses.asdict(self.config),
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "rng": rng,
        })
        run_folder.keep_history(self.out_dir / run_folder.CHECKPOINT_FILE,
                                self.out_dir / run_folder.CHECKPOINT_HISTORY,
                                f"step_{self.step:08d}.pt", self.config.keep_checkpoints)

    def _restore(self, state: dict) -> None:
        """Continue from a checkpoint of a run with the same config (``steps`` may grow)."""
        path = self.out_dir / run_folder.CHECKPOINT_FILE
        if state.get("format") != CHECKPOINT_FORMAT or "rng" not in state:
            raise ValueError(f"checkpoint {path} was written by another version of fastgp "
                             f"(format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}); "
                             "it cannot be resumed")
        saved = dict(state["config"])
        current = dataclasses.asdict(self.config)
        differing = sorted(key for key in current
                           if key not in RESUMABLE_CHANGES and saved.get(key) != current[key])
        if differing:
            changes = ", ".join(f"{key}: {saved.get(key)!r} -> {current[key]!r}" for key in differing)
            raise ValueError(f"cannot resume {self.out_dir}: the config differs ({changes}); only "
                             f"{', '.join(RESUMABLE_CHANGES)} may change")
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.data_stream.set_state(state["rng"]["data"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.step = int(state["step"])
        self.seconds_before = float(state["seconds"])


def load_generator(run_dir: Path) -> tuple[nn.Module, TrainConfig]:
    """The generator of a run folder, in eval mode on the CPU, with its config."""
    run_dir = Path(run_dir)
    config_path = run_dir / run_folder.CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a fastgp run folder: {config_path.name} is missing")
    config = TrainConfig.from_dict(run_folder.read_json(config_path))
    state = run_folder.load_checkpoint(run_dir / run_folder.CHECKPOINT_FILE)
    generator = build_generator(config)
    generator.load_state_dict(state["generator"])
    return generator.eval(), config


@torch.no_grad()
def sample(run_dir: Path, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` samples from a run's generator, shape ``(n, 2)``, reproducible for a ``seed``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    generator, config = load_generator(run_dir)
    noise = torch.randn(n, config.noise_dim, generator=torch.Generator().manual_seed(seed))
    return generator(noise)
