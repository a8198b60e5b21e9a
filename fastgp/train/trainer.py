"""WGAN training (Gulrajani et al. 2017, Algorithm 1, and the baselines it is compared with).

Each generator step is preceded by ``n_critic`` critic steps; every critic step draws fresh real
samples, fresh noise and fresh ε. The options and their per-loss defaults are documented in
:mod:`fastgp.train.config`. The critic step runs on :class:`fastgp.FusedCritic` when the loss,
penalty and critic allow it (``critic_step="auto"``), through autograd otherwise. Samples and
metrics come from an exponential moving average of the generator's weights when ``ema > 0``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from fastgp.devices import host_to_device, make_deterministic
from fastgp.losses import clip_weights_
from fastgp.models import image_models, mlp, paper_adam
from fastgp.train import run_contents, run_folder
from fastgp.train.averaging import generator_average
from fastgp.train.config import TrainConfig
from fastgp.train.data import SwissRoll, ToyDataset
from fastgp.train.distributed import ProcessGroup
from fastgp.train.image_data import ImageDataset, ImageFolder, load_dataset
from fastgp.train.image_metrics import digits_classifier, digits_quality
from fastgp.train.initialization import initialize_
from fastgp.train.loader import StreamedBatches
from fastgp.train.metrics import earth_movers_distance, mode_coverage
from fastgp.train.objectives import Objectives, at_least_fp32, interpolate_gradient_norms
from fastgp.train.plots import plot_toy_samples, plot_training_curves, save_image_grid
from fastgp.train.report import write_report
from fastgp.train.run_lock import RunLock
from fastgp.train.tensorboard import TensorBoardLog

CHECKPOINT_FORMAT = 2
# Options that change neither the models nor the random streams: a resumed run may set them anew.
# (With the linear schedule a new ``steps`` changes the learning rates from the resumed step on.)
RESUMABLE_CHANGES = ("steps", "log_every", "eval_every", "keep_checkpoints", "data_workers")
# What every checkpoint of this format holds (a resumed run reads them all).
RESUME_KEYS = ("step", "seconds", "config", "generator", "critic", "generator_optimizer",
               "critic_optimizer", "rng")
EVALUATIONS_CSV = run_folder.EVALUATIONS_CSV
RANK_SEED_STRIDE = 7919  # process r draws its noise and data from seed + 7919·r
SCALED_COLUMNS = ("critic_loss", "penalty", "grad_norm_mean", "grad_norm_std", "grad_norm_max")
PENALTY_SHARE_REPEATS = 5

LOG_COLUMNS = [
    "step", "critic_loss", "generator_loss", "w_estimate", "penalty",
    "grad_norm_mean", "grad_norm_std", "grad_norm_max", "lr", "seconds_per_step", "seconds",
]
# Columns of evaluations.csv by what the data allow to measure.
EVALUATION_COLUMNS = {
    "toy": ["step", "modes_covered", "num_modes", "high_quality_share", "emd", "emd_floor",
            "penalty_share", "seconds"],
    "vector": ["step", "emd", "emd_floor", "penalty_share", "seconds"],
    "digits": ["step", "classes_present", "min_class_share", "max_class_share",
               "frechet_distance", "frechet_floor", "penalty_share", "seconds"],
    "image": ["step", "penalty_share", "seconds"],
}
GRID_IMAGES = 64  # generated images shown per evaluation grid


def data_kind(data) -> str:
    """``toy`` (built-in 2-D sets), ``vector`` (other (N, D) data) or ``image``."""
    if isinstance(data, ToyDataset | SwissRoll):
        return "toy"
    return "image" if isinstance(data, ImageDataset | ImageFolder) else "vector"


def build_models(config: TrainConfig, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """``(generator, critic)`` of a resolved config for samples of ``sample_shape``."""
    if config.architecture == "mlp":
        (dim,) = sample_shape
        generator = mlp(config.noise_dim, dim, config.hidden, config.depth)
        critic = mlp(dim, 1, config.hidden, config.depth)
    else:
        generator, critic = image_models(sample_shape, config.noise_dim, config.architecture,
                                         config.width)
    return initialize_(generator, config.init), initialize_(critic, config.init)


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
        # One fixed noise batch and two fixed real batches for every evaluation, so that
        # evaluations differ only by the model; the second real batch gives the EMD floor.
        evaluation_stream = torch.Generator().manual_seed(config.seed + 2)
        self.eval_noise = torch.randn(config.eval_samples, config.noise_dim, generator=evaluation_stream)
        if self.kind != "image":  # images are measured against the classifier's own real halves
            self.eval_real = self.data.sample(config.eval_samples, evaluation_stream)
            self.eval_real_other = self.data.sample(config.eval_samples, evaluation_stream)
        self._emd_floor: float | None = None
        self.evaluation_columns = EVALUATION_COLUMNS[
            "digits" if config.dataset == "digits" else self.kind]
        self._classifier = None  # the digits classifier, loaded at the first evaluation
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
                self._restore(run_folder.load_checkpoint(self.out_dir / run_folder.CHECKPOINT_FILE))
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

    def penalty_share(self) -> float:
        """Share of a critic step's time spent on the penalty: ``1 − t(no penalty) / t(penalty)``,
        medians of interleaved repeats on the last training batch (0 without a penalty)."""
        if self.config.penalty == "none" or self._last_batch is None:
            return 0.0
        real, fake = self._last_batch
        times: dict[bool, list[float]] = {True: [], False: []}
        for repeat in range(PENALTY_SHARE_REPEATS + 1):
            for with_penalty in (True, False):
                begin = time.perf_counter()
                self.objectives.critic_step(real, fake, with_penalty, rng=self.probe_stream)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if repeat:  # the first round warms up
                    times[with_penalty].append(time.perf_counter() - begin)
        # The gradients left behind are overwritten by the next training step.
        return max(0.0, 1.0 - statistics.median(times[False]) / statistics.median(times[True]))

    @torch.no_grad()
    def evaluate(self, figure_name: str) -> dict:
        """Metrics of the fixed evaluation batch, a figure of it (over real data, or an image
        grid), and a row of ``evaluations.csv``."""
        sampler = self.sampler
        sampler.eval()
        samples = sampler(self.eval_noise.to(self.device)).cpu()
        sampler.train()
        metrics: dict = {"step": self.step}
        title = f"{self.config.dataset}, step {self.step}"
        if self.kind == "image":
            if self.config.dataset == "digits":
                if self._classifier is None:
                    self._classifier = digits_classifier()
                metrics |= digits_quality(samples, self._classifier)
            save_image_grid(self.out_dir / figure_name, samples[:GRID_IMAGES])
        else:
            if self._emd_floor is None:
                self._emd_floor = earth_movers_distance(self.eval_real_other, self.eval_real)
            metrics["emd"] = earth_movers_distance(samples, self.eval_real)
            metrics["emd_floor"] = self._emd_floor
            if isinstance(self.data, ToyDataset):
                metrics |= mode_coverage(samples, self.data.centres, self.data.sigma).as_dict()
                title += (f": {metrics['modes_covered']}/{metrics['num_modes']} modes, "
                          f"{100 * metrics['high_quality_share']:.1f}% high quality")
            # The critic's level sets are drawn where the data are 2-D.
            critic = None
            if self.sample_shape == (2,):
                critic = lambda points: self.critic(points.to(self.device)).cpu()  # noqa: E731
            plot_toy_samples(self.out_dir / figure_name, self.eval_real, samples, critic, title)
        with torch.enable_grad():
            metrics["penalty_share"] = self.penalty_share()
        start = self._start
        metrics["seconds"] = self.seconds_before if start is None else time.perf_counter() - start
        if self.evaluations is not None:
            self.evaluations.append({column: metrics.get(column, "")
                                     for column in self.evaluation_columns})
            self.tensorboard.scalars("eval", metrics, self.step)
        return metrics

    def save_checkpoint(self) -> None:
        """Everything a resumed run needs to continue exactly: models, weight average, optimizers,
        step, time and the random streams (noise and ε from the global generator, real samples
        from the data stream) of every process. The learning-rate schedule is a function of the
        step. Every process must call it (the random states are gathered); rank 0 writes."""
        rng = {"torch": torch.get_rng_state(), "data": self.data_stream.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        rng_per_process = self.group.gather(rng)
        if not self.group.is_main:
            return
        start = self._start
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "seconds": self.seconds_before if start is None else time.perf_counter() - start,
            "config": dataclasses.asdict(self.config),
            "sample_shape": list(self.sample_shape),
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "processes": self.group.world_size,
            "rng": rng_per_process,
        }
        if self.average is not None:
            state["generator_average"] = self.average.state_dict()
        if self.generator_scaler is not None:
            state["scalers"] = {"critic": self.objectives.scaler.state_dict(),
                                "generator": self.generator_scaler.state_dict()}
        run_folder.save_checkpoint(self.out_dir / run_folder.CHECKPOINT_FILE, state)
        run_folder.keep_history(self.out_dir / run_folder.CHECKPOINT_FILE,
                                self.out_dir / run_folder.CHECKPOINT_HISTORY,
                                f"step_{self.step:08d}.pt", self.config.keep_checkpoints)

    def _restore(self, state: dict) -> None:
        """Continue from a checkpoint of a run with the same config (``steps`` may grow)."""
        path = self.out_dir / run_folder.CHECKPOINT_FILE
        if state.get("format") != CHECKPOINT_FORMAT or "processes" not in state:
            raise ValueError(f"checkpoint {path} was written by another version of fastgp "
                             f"(format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}); "
                             "it cannot be resumed")
        missing = [key for key in RESUME_KEYS if key not in state]
        if missing:
            raise ValueError(f"{path} is not a fastgp checkpoint: missing keys {missing}; it "
                             "cannot be resumed")
        differing = self.config.changes_from(dict(state["config"]), RESUMABLE_CHANGES)
        if differing:
            changes = ", ".join(differing)
            raise ValueError(f"cannot resume {self.out_dir}: the config differs ({changes}); only "
                             f"{', '.join(RESUMABLE_CHANGES)} may change")
        step = int(state["step"])
        if self.config.steps <= step:
            # Nothing would be trained: the run would evaluate and report again, under a
            # step count that is not the one trained.
            raise ValueError(f"cannot resume {self.out_dir}: its checkpoint is at step {step} and "
                             f"steps is {self.config.steps}; give --steps above {step} to train "
                             "further")
        if state["processes"] != self.group.world_size:
            raise ValueError(f"cannot resume {self.out_dir}: it ran on {state['processes']} "
                             f"processes, this job has {self.group.world_size}; each process's "
                             "random streams are part of the checkpoint")
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        if self.average is not None:
            self.average.load_state_dict(state["generator_average"])
        if self.generator_scaler is not None:
            self.objectives.scaler.load_state_dict(state["scalers"]["critic"])
            self.generator_scaler.load_state_dict(state["scalers"]["generator"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        rng = state["rng"][self.group.rank]
        torch.set_rng_state(rng["torch"])
        self.data_stream.set_state(rng["data"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step = step
        self.seconds_before = float(state["seconds"])


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
