"""WGAN training (Gulrajani et al. 2017, Algorithm 1, and the baselines it is compared with).

Each generator step is preceded by ``n_critic`` critic steps; every critic step draws fresh real
samples, fresh noise and fresh ε. The options and their per-loss defaults are documented in
:mod:`fastgp.train.config`. The critic step runs on :class:`fastgp.FusedCritic` when the loss,
penalty and critic allow it (``critic_step="auto"``), through autograd otherwise. Samples and
metrics come from an exponential moving average of the generator's weights when ``ema > 0``.

This module is the loop; checkpoints (writing, resuming, loading a finished run) are
:mod:`fastgp.train.checkpoint`'s, and the evaluations :mod:`fastgp.train.evaluation`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from fastgp.devices import host_to_device, make_deterministic
from fastgp.losses import clip_weights_
from fastgp.models import paper_adam
from fastgp.train import checkpoint, evaluation, run_contents, run_folder
from fastgp.train.averaging import generator_average
from fastgp.train.config import TrainConfig
from fastgp.train.data import SwissRoll, ToyDataset
from fastgp.train.distributed import ProcessGroup
from fastgp.train.image_data import ImageDataset, ImageFolder, load_dataset
from fastgp.train.loader import StreamedBatches
from fastgp.train.networks import build_models
from fastgp.train.objectives import Objectives, at_least_fp32, interpolate_gradient_norms
from fastgp.train.plots import plot_training_curves
from fastgp.train.report import write_report
from fastgp.train.run_lock import RunLock
from fastgp.train.tensorboard import TensorBoardLog

EVALUATIONS_CSV = run_folder.EVALUATIONS_CSV
RANK_SEED_STRIDE = 7919  # process r draws its noise and data from seed + 7919·r
SCALED_COLUMNS = ("critic_loss", "penalty", "grad_norm_mean", "grad_norm_std", "grad_norm_max")

LOG_COLUMNS = [
    "step", "critic_loss", "generator_loss", "w_estimate", "penalty",
    "grad_norm_mean", "grad_norm_std", "grad_norm_max", "lr", "seconds_per_step", "seconds",
]


def data_kind(data) -> str:
    """``toy`` (built-in 2-D sets), ``vector`` (other (N, D) data) or ``image``."""
    if isinstance(data, ToyDataset | SwissRoll):
        return "toy"
    return "image" if isinstance(data, ImageDataset | ImageFolder) else "vector"


def _optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, config.lr)
    return paper_adam(parameters, config.lr, (config.beta1, config.beta2))


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """A plain step, or with fp16 the scaler's: unscale, skip on inf/NaN, adapt the scale."""
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()


class Trainer:
    """Runs one training job and writes its run folder.

    ``config`` may leave loss-dependent options at None; the trainer works on (and saves) the
    resolved copy, ``trainer.config``.

    The run folder is checked and locked when the trainer is made, and released when
    :meth:`run` ends (or by :meth:`release_folder`): a fresh run needs a new or empty folder,
    or ``overwrite`` to replace an earlier fastgp run there (see :mod:`fastgp.train.run_contents`);
    ``resume`` continues the run whose checkpoint is there.
    """

    def __init__(self, config: TrainConfig, out_dir: Path, progress: bool = True,
                 resume: bool = False, group: ProcessGroup | None = None,
                 overwrite: bool = False) -> None:
        self.group = group if group is not None else ProcessGroup()
        self.data = load_dataset(config.dataset, config.image_size)
        self.kind = data_kind(self.data)
        self.sample_shape = tuple(self.data.sample(1).shape[1:])
        config = self.config = config.resolved(self.kind, self.sample_shape[0])
        self.out_dir = Path(out_dir)
        self.progress = progress and self.group.is_main
        if config.deterministic:  # before any model exists: it also fixes cuBLAS's workspaces
            make_deterministic()
        self.device = self.group.select_device(config.device)
        if config.batch_size % self.group.world_size:
            raise ValueError(f"batch_size {config.batch_size} must divide evenly over "
                             f"{self.group.world_size} processes")
        self.local_batch = config.batch_size // self.group.world_size  # this process's shard
        torch.manual_seed(config.seed)
        self.generator, self.critic = build_models(config, self.sample_shape)
        self.generator.to(self.device)
        self.critic.to(self.device)
        self.group.broadcast_parameters(self.generator)
        self.group.broadcast_parameters(self.critic)
        # Every process draws its own shard: its own noise, ε and real samples.
        stream_seed = config.seed + RANK_SEED_STRIDE * self.group.rank
        if self.group.distributed:
            torch.manual_seed(stream_seed)
        self.data_stream = torch.Generator().manual_seed(stream_seed + 1)
        # An image folder is decoded by a DataLoader's workers, in the data stream's order;
        # the in-memory sets draw from the stream directly.
        self.batches = (StreamedBatches(self.data, self.local_batch, self.data_stream,
                                        config.data_workers)
                        if isinstance(self.data, ImageFolder) else None)
        self.generator_optimizer = _optimizer(self.generator.parameters(), config)
        self.critic_optimizer = _optimizer(self.critic.parameters(), config)
        self.average = None
        if config.ema > 0:
            self.average = generator_average(self.generator, config.ema)
        self.objectives = Objectives(self.critic, config)
        self.generator_scaler = (torch.amp.GradScaler(self.device.type)
                                 if config.precision == "fp16" else None)
        # Draws of diagnostics (gradient norms, timing probes) come from their own stream so that
        # logging and evaluation never change the training run.
        self.probe_stream = torch.Generator(self.device).manual_seed(config.seed + 3)
        self.eval_batches = evaluation.fixed_batches(self.data, self.kind, config)
        self.evaluation_columns = evaluation.evaluation_columns(config, self.kind)
        self.step = 0
        self.seconds_before = 0.0  # training time of the run before a resume
        self._start: float | None = None  # perf_counter origin of the training-time axis
        self._stop_requested = False  # set by Ctrl-C / SIGTERM: stop after the current step
        self._last_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.evaluations: run_folder.MetricsLog | None = None  # evaluations.csv while running
        self.tensorboard: TensorBoardLog | None = None
        self.resumed = resume
        self.replaced: list[str] = []  # fastgp's files of an earlier run that run() removes
        self._lock: RunLock | None = None
        self._claim_folder(resume, overwrite)
        if resume:
            try:
                state = checkpoint.load_resumable(self.out_dir, config, self.group.world_size)
                self.step, self.seconds_before = checkpoint.restore(
                    state, rank=self.group.rank, generator=self.generator, critic=self.critic,
                    generator_optimizer=self.generator_optimizer,
                    critic_optimizer=self.critic_optimizer, average=self.average,
                    scalers=self._scalers(), data_stream=self.data_stream, device=self.device)
            except BaseException:
                self.release_folder()
                raise

    def _claim_folder(self, resume: bool, overwrite: bool) -> None:
        """Rank 0 checks and locks the run folder; every rank learns whether it refused, so
        that no rank is left waiting alone in a collective."""
        if resume and overwrite:
            raise ValueError("--resume continues the run in the folder and --overwrite starts "
                             "over: give one of them")
        refusal = None
        if self.group.is_main:
            try:
                self._lock_folder(resume, overwrite)
            except FileNotFoundError as error:
                refusal = error
            except OSError as error:  # e.g. a folder that cannot be listed
                refusal = ValueError(f"cannot use {self.out_dir} as the run folder: {error}")
            except ValueError as error:
                refusal = error
        if self.group.any(refusal is not None, self.device):
            raise refusal or ValueError(f"rank 0 refused the run folder {self.out_dir}")

    def _lock_folder(self, resume: bool, overwrite: bool) -> None:
        folder = self.out_dir
        checkpoint = folder / run_folder.CHECKPOINT_FILE
        run_contents.check_destination(folder)
        if resume and not checkpoint.is_file():
            raise FileNotFoundError(f"no checkpoint at {checkpoint}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot create {folder}: {error.strerror}") from None
        # Checked under the lock: another process cannot change the folder in between.
        self._lock = RunLock(folder).acquire()
        try:
            if resume:
                run_contents.refuse_links(folder, run_contents.survey(folder))
            else:
                self.replaced = run_contents.check_fresh(folder, overwrite)
        except BaseException:
            self.release_folder()
            raise

    @property
    def stale_lock(self) -> str | None:
        """The holder (``pid N on HOST``) of a lock left by a dead process and taken over."""
        return self._lock.stale_owner if self._lock is not None else None

    def release_folder(self) -> None:
        """Give back the run folder's lock (:meth:`run` does when it ends, however it ends)."""
        if self._lock is not None:
            self._lock.release()

    @property
    def critic_step_name(self) -> str:
        return self.objectives.path_name

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and metrics: the weight average when it is on."""
        return self.average.module if self.average is not None else self.generator

    def run(self) -> dict:
        """Train for ``config.steps`` generator steps; returns the final metrics."""
        if self.group.is_main and not (self._lock is not None and self._lock.held):
            raise RuntimeError("this Trainer has already run; make a new one (with resume=True "
                               "to continue)")
        try:
            return self._run()
        finally:
            if self.batches is not None:
                self.batches.close()
            self.release_folder()

    def _run(self) -> dict:
        main = self.group.is_main  # rank 0 writes the run folder; the others only train
        resume_after = self.step if self.resumed else None
        log = None
        if main:
            run_contents.remove(self.out_dir, self.replaced)  # --overwrite: fastgp's files only
            for folder in (self.out_dir, self.out_dir / run_folder.CHECKPOINT_HISTORY):
                run_folder.remove_stale_temporaries(folder)
            run_folder.write_json(self.out_dir / run_folder.CONFIG_FILE,
                                  dataclasses.asdict(self.config))
            log = run_folder.MetricsLog(self.out_dir / run_folder.METRICS_CSV, LOG_COLUMNS,
                                        resume_after)
            self.evaluations = run_folder.MetricsLog(self.out_dir / EVALUATIONS_CSV,
                                                     self.evaluation_columns, resume_after)
            self.tensorboard = TensorBoardLog(self.out_dir, resume_after)
        start = self._start = time.perf_counter() - self.seconds_before
        last_log = (self.step, time.perf_counter())
        # Redraw often on a terminal, rarely in a log file (CI, nohup) so logs stay readable.
        redraw_seconds = 0.1 if sys.stderr.isatty() else 10.0
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not self.progress,
                   unit="step", dynamic_ncols=True, mininterval=redraw_seconds)
        interrupted = False
        try:
            with self._stop_between_steps():
                while self.step < self.config.steps and not self._stop_agreed():
                    stats = self._train_step()
                    self.step += 1
                    bar.update(1)
                    if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                        now = time.perf_counter()
                        row = self._log_row(stats) | {
                            "step": self.step, "seconds": now - start,
                            "seconds_per_step": (now - last_log[1]) / (self.step - last_log[0]),
                        }
                        last_log = (self.step, now)
                        self._check_finite(row)
                        if main:
                            log.append(row)
                            self.tensorboard.scalars("train", row, self.step)
                            bar.set_postfix(W=f"{row['w_estimate']:.4f}", pen=f"{row['penalty']:.4f}",
                                            refresh=False)  # redraw at the bar's own pace
                    if self.step % self.config.eval_every == 0 and self.step < self.config.steps:
                        if main:
                            self.evaluate(f"samples_step{self.step:06d}.png")
                        self.save_checkpoint()
                        last_log = (self.step, time.perf_counter())  # evaluation is not step time
            interrupted = self.step < self.config.steps
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            if log is not None:
                log.close()
        seconds = time.perf_counter() - start
        self.save_checkpoint()
        if not main:
            if interrupted:
                raise KeyboardInterrupt
            return {}
        final = self.evaluate(run_folder.SAMPLES) | {
            "steps": self.step, "seconds": seconds, "interrupted": interrupted,
            "critic_step": self.critic_step_name, "processes": self.group.world_size,
        }
        self.evaluations.close()
        self.tensorboard.close()
        run_folder.write_json(self.out_dir / run_folder.FINAL_METRICS, final)
        plot_training_curves(self.out_dir / run_folder.CURVES,
                             self.out_dir / run_folder.METRICS_CSV)
        write_report(self.out_dir, dataclasses.asdict(self.config), final,
                     self.out_dir / run_folder.METRICS_CSV, self.out_dir / EVALUATIONS_CSV,
                     [run_folder.SAMPLES, run_folder.CURVES])
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

    def _stop_agreed(self) -> bool:
        """Whether every process stops before the next step (after Ctrl-C or SIGTERM).

        A single process reads its own flag. Processes agree with an all-reduce whose result the
        host must read, a device sync, so they agree only at logged steps (which read the
        logged values anyway): a stop request waits at most ``log_every`` steps there."""
        if not self.group.distributed:
            return self._stop_requested
        if self.step % self.config.log_every:
            return False
        return self.group.any(self._stop_requested, self.device)

    def learning_rate(self, step: int) -> float:
        """The schedule: constant, or linear decay from ``lr`` at step 0 to 0 after the last step."""
        if self.config.lr_schedule == "linear":
            return self.config.lr * max(0.0, 1.0 - step / self.config.steps)
        return self.config.lr

    def _real_batch(self) -> torch.Tensor:
        """The next real batch of this process: ``local_batch`` samples of the data stream."""
        if self.batches is not None:
            return self.batches.next()
        return self.data.sample(self.local_batch, self.data_stream)

    def _train_step(self) -> dict:
        config = self.config
        lr = self.learning_rate(self.step)
        for optimizer in (self.critic_optimizer, self.generator_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = lr
        for index in range(config.n_critic):
            real = host_to_device(self._real_batch(), self.device)
            noise = torch.randn(self.local_batch, config.noise_dim, device=self.device)
            with torch.no_grad(), self.objectives.autocast():
                fake = at_least_fp32(self.generator(noise))
            due = self.objectives.penalty_due(self.step * config.n_critic + index)
            stats = self.objectives.critic_step(real, fake, due)
            self.group.average_gradients(self.critic)
            _optimizer_step(self.critic_optimizer, self.objectives.scaler)
            if config.loss == "wgan-clip":
                clip_weights_(self.critic, config.clip)
        self._last_batch = (real, fake)

        self.critic.requires_grad_(False)  # the generator step needs no critic weight gradients
        noise = torch.randn(self.local_batch, config.noise_dim, device=self.device)
        with self.objectives.autocast():
            fake_scores = self.critic(self.generator(noise))
        generator_loss = self.objectives.generator_loss(fake_scores)
        self.generator_optimizer.zero_grad(set_to_none=True)
        scaler = self.generator_scaler
        (scaler.scale(generator_loss) if scaler is not None else generator_loss).backward()
        self.group.average_gradients(self.generator)
        _optimizer_step(self.generator_optimizer, scaler)
        self.critic.requires_grad_(True)
        if self.average is not None:
            self.average.update_parameters(self.generator)
        return {"critic": stats, "generator_loss": generator_loss.detach(), "lr": lr}

    def _log_row(self, step_stats: dict) -> dict[str, float]:
        """The logged values of a step, read on the host at once (one device sync per row)."""
        stats = step_stats["critic"]
        norms = stats.norms
        if norms is None:  # no penalty measured them on this step: measure at fresh interpolates
            norms = interpolate_gradient_norms(self.critic, *self._last_batch, rng=self.probe_stream)
        # Means over equal shards are the global batch's means; norms are gathered whole.
        losses = torch.stack([stats.loss, step_stats["generator_loss"], stats.wasserstein,
                              stats.penalty]).float()
        losses = self.group.average(losses)
        norms = self.group.concatenate(norms.float())
        spread = norms.std() if norms.numel() > 1 else norms.new_zeros(())
        values = torch.cat([losses, torch.stack([norms.mean(), spread, norms.max()])]).tolist()
        names = ("critic_loss", "generator_loss", "w_estimate", "penalty", "grad_norm_mean",
                 "grad_norm_std", "grad_norm_max")
        return dict(zip(names, values, strict=True)) | {"lr": step_stats["lr"]}

    def _check_finite(self, row: dict[str, float]) -> None:
        # With fp16 loss scaling, a step whose scaled gradients overflowed is skipped by the
        # scaler (which then lowers the scale): its penalty and norms are inf/NaN by design.
        # Divergence still shows in the scores (W estimate) and the generator loss.
        exempt = SCALED_COLUMNS if self.config.precision == "fp16" else ()
        bad = [name for name, value in row.items()
               if not math.isfinite(value) and name not in exempt]
        if bad:
            raise FloatingPointError(f"training diverged at step {self.step}: {bad} not finite")

    def _seconds(self) -> float:
        """Training time of the run so far; before the loop starts, the time a resumed
        checkpoint holds (0 for a fresh run)."""
        start = self._start
        return self.seconds_before if start is None else time.perf_counter() - start

    def _scalers(self) -> dict[str, torch.amp.GradScaler] | None:
        """The fp16 loss scalers by role, as a checkpoint holds them; None without fp16."""
        if self.generator_scaler is None:
            return None
        return {"critic": self.objectives.scaler, "generator": self.generator_scaler}

    def evaluate(self, figure_name: str) -> dict:
        """Metrics of the fixed evaluation batch, a figure of it (over real data, or an image
        grid) at ``figure_name`` in the run folder, and a row of ``evaluations.csv``."""
        metrics = evaluation.sample_quality(
            sampler=self.sampler, critic=self.critic, batches=self.eval_batches, data=self.data,
            kind=self.kind, dataset=self.config.dataset, sample_shape=self.sample_shape,
            device=self.device, step=self.step, figure=self.out_dir / figure_name)
        metrics["penalty_share"] = evaluation.penalty_share(self.objectives, self._last_batch,
                                                            self.probe_stream, self.device)
        # Read last: the row's time is that of the evaluation's end, measurements included.
        metrics["seconds"] = self._seconds()
        if self.evaluations is not None:
            self.evaluations.append({column: metrics.get(column, "")
                                     for column in self.evaluation_columns})
            self.tensorboard.scalars("eval", metrics, self.step)
        return metrics

    def save_checkpoint(self) -> None:
        """Write the run's checkpoint (see :mod:`fastgp.train.checkpoint`). Every process must
        call it (the random states are gathered); rank 0 writes."""
        rng_per_process = self.group.gather(checkpoint.random_state(self.data_stream, self.device))
        if not self.group.is_main:
            return
        checkpoint.save(
            self.out_dir, step=self.step, seconds=self._seconds(), config=self.config,
            sample_shape=self.sample_shape, generator=self.generator, critic=self.critic,
            generator_optimizer=self.generator_optimizer, critic_optimizer=self.critic_optimizer,
            average=self.average, scalers=self._scalers(), rng_per_process=rng_per_process,
            keep=self.config.keep_checkpoints)
