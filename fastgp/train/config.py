"""The configuration of a training run: every choice, with defaults that depend on the loss.

Options left at ``None`` take the default of the chosen loss when a run starts
(:meth:`TrainConfig.resolved`), and the resolved values are what ``config.json`` records:

============  ===========================  =====================  ======================
loss          penalty (weight on toy data)  critic steps, lr       optimizer
============  ===========================  =====================  ======================
wgan-gp       gp, λ = 0.1                   5, 1e-3 (1e-4)         Adam (0.5, 0.9)
wgan-lp       lp (one-sided), λ = 0.1       5, 1e-3 (1e-4)         Adam (0.5, 0.9)
wgan-clip     none, weights clipped ±0.01   5, 5e-5                RMSprop
gan           none                          1, 1e-3 (1e-4)         Adam (0.5, 0.9)
============  ===========================  =====================  ======================

WGAN-GP and WGAN-LP follow Gulrajani et al. 2017 (λ = 0.1 on the toy sets, 10 on images) and
Petzka et al. 2018; weight clipping follows Arjovsky et al. 2017 (RMSprop, lr 5e-5, c = 0.01,
"momentum based optimizers such as Adam" made its training unstable); the BCE GAN takes one
discriminator step per generator step with the non-saturating generator loss (Goodfellow et al.
2014). Learning rates in parentheses are for data other than the toy sets: on the toy MLPs the
paper's 1e-4 with Adam was measured far slower than 1e-3 with linear decay and the generator
average (8 gaussians, 2,000 steps: 63% vs 93% high-quality samples; README, "Training"). Any loss
may take any penalty (``penalty=``): R1/R2 (γ/2·E‖∇D‖², Mescheder et al. 2018)
and DRAGAN (Kodali et al. 2017) are the usual ones for the BCE GAN.

Data-dependent options resolve by the kind of data: the built-in 2-D toy sets (``toy``), other
vector data such as an ``(N, D)`` array (``vector``), and images (``image``):

===========  ============  ============  ==========  ===========  =============
kind         models        noise_dim     batch_size  gp_weight    eval_samples
===========  ============  ============  ==========  ===========  =============
toy          MLP           2             256         0.1          2,500
vector       MLP           D             256         10           2,500
image        DCGAN         128           64          10           898
===========  ============  ============  ==========  ===========  =============

898 evaluation images are half of the 1,797 built-in digits, so the Fréchet distance of the
samples and its real-vs-real floor are computed with the same number of images.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from fastgp.devices import resolve_device
from fastgp.engine.fused_critic import PENALTIES as ENGINE_PENALTIES
from fastgp.train.data import BUILTIN_DATASETS

LOSSES = ("wgan-gp", "wgan-lp", "wgan-clip", "gan")
# What `fastgp compare` trains by default, with one budget (fastgp.train.compare).
COMPARED_LOSSES = ("gan", "wgan-clip", "wgan-gp", "wgan-lp")
# The engine's penalties and DRAGAN (Tier 1 only: its points are random perturbations).
PENALTIES = (*(name for name in ENGINE_PENALTIES if name != "none"), "dragan", "none")
OPTIMIZERS = ("adam", "rmsprop")
LR_SCHEDULES = ("constant", "linear")
INITIALIZATIONS = ("pytorch", "he", "xavier", "orthogonal", "dcgan")
ARCHITECTURES = ("mlp", "dcgan", "resnet")
DATA_KINDS = ("toy", "vector", "image")
CRITIC_STEPS = ("auto", "engine", "tier1")
PRECISIONS = ("fp32", "bf16", "fp16")

_LOSS_PENALTY = {"wgan-gp": "gp", "wgan-lp": "lp", "wgan-clip": "none", "gan": "none"}
# 25 gaussians needs more steps than the other sets: with the defaults, runs of 2,000 / 4,000 /
# 6,000 steps ended with all 25 modes and 70.0% / 91.0% / 94.7% high-quality samples.
DEFAULT_STEPS = {"25gaussians": 6000}
TOY_PENALTY_WEIGHT = 0.1  # the WGAN-GP paper's λ for its toy sets
PENALTY_WEIGHT = 10.0  # ... and for everything else
# Seeds a run accepts: NumPy's range, well inside torch's [0, 2**64), so that the derived streams
# (seed + 1, + 2, + 3 and + 7919 per process) stay valid seeds too.
SEED_RANGE = range(2**32)
FLOAT_OPTIONS = ("gp_weight", "clip", "lr", "beta1", "beta2", "ema")


def _option(default, help: str | None = None, choices: tuple[str, ...] | None = None):
    """A field of :class:`TrainConfig` with what ``fastgp train`` says of it: its ``--help``
    text and, for a field that takes one of a few names, those names (the flag's ``choices``;
    :meth:`TrainConfig.validate` checks them too). ``fastgp train`` makes one flag of each field."""
    metadata = {"help": help} if help is not None else {}
    if choices is not None:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a run; saved, resolved, as the run folder's ``config.json``."""

    dataset: str = _option(
        "8gaussians",
        f"one of {', '.join(BUILTIN_DATASETS)}, a folder of images, or a .npy/.npz array "
        "((N, D) vectors or (N, [C,] H, W [, C]) images)")
    image_size: int | None = _option(None, "resize images to this size")
    steps: int | None = _option(
        None, "generator steps (default: 6000 on 25gaussians, 2000 otherwise)")
    batch_size: int | None = _option(None, "default: 256 (toy and vector data), 64 (images)")
    loss: str = _option("wgan-gp", choices=LOSSES)
    penalty: str | None = _option(
        None, "default: the loss's own (gp, lp, none for wgan-clip and gan)", PENALTIES)
    gp_weight: float | None = _option(
        None, "λ of gp/lp/dragan, γ of r1/r2 (default: 0.1 on toy data, 10 on images)")
    penalty_every: int = _option(
        1, "lazy regularization: the penalty (×k) on every k-th critic step")
    clip: float = _option(0.01, "wgan-clip's bound")
    n_critic: int | None = _option(
        None, "critic steps per generator step (default: 5 for WGANs, 1 for gan)")
    optimizer: str | None = _option(
        None, "default: rmsprop for wgan-clip, adam otherwise", OPTIMIZERS)
    lr: float | None = _option(
        None, "default: 5e-5 for wgan-clip, 1e-3 on the toy sets, 1e-4 otherwise")
    beta1: float = _option(0.5, "Adam's β1")
    beta2: float = _option(0.9, "Adam's β2")
    lr_schedule: str = _option("linear", choices=LR_SCHEDULES)  # linear: decay to 0 at the end
    init: str = _option("pytorch", choices=INITIALIZATIONS)
    ema: float = _option(0.999, "decay of the generator's weight average used for samples (0: off)")
    architecture: str | None = _option(
        None, "default: mlp (toy and vector data), dcgan (images)", ARCHITECTURES)
    hidden: int = _option(256, "MLP width")
    depth: int = _option(3, "MLP hidden layers")
    width: int | None = _option(None, "image models' base width (default: 64 dcgan, 128 resnet)")
    noise_dim: int | None = _option(None, "default: 2 (toy), D (vector data), 128 (images)")
    seed: int = _option(0)
    log_every: int = _option(10, "generator steps between rows of metrics.csv")
    eval_every: int = _option(500)
    eval_samples: int | None = _option(
        None, "samples per evaluation (default: 2500 toy/vector, 898 images)")
    # auto is resolved when a run starts
    device: str = _option("auto", "auto (cuda where available, else cpu), cpu, cuda, cuda:N or mps")
    precision: str = _option(
        "fp32", "bf16/fp16: autocast forwards, fp32 norms; fp16 with loss scaling", PRECISIONS)
    critic_step: str = _option(
        "auto", "engine: fastgp.FusedCritic; tier1: fastgp.gradient_penalty; auto: the engine "
        "when it supports the critic", CRITIC_STEPS)
    compile: bool = _option(
        False, "run the engine's critic step under torch.compile (slower on CPU)")
    deterministic: bool = _option(
        False, "deterministic algorithms only (cuDNN, cuBLAS, torch): reruns and resumes repeat "
        "exactly on CUDA, at some cost in speed")
    keep_checkpoints: int = _option(3, "step-numbered checkpoints kept in checkpoints/")
    data_workers: int | None = _option(
        None, "processes that decode an image folder's files (0: the training process itself; "
        "default: min(4, CPUs)); the batches do not depend on it")

    def validate(self) -> None:
        # NaN fails every comparison, so the range checks below would let it through (and inf
        # through those without an upper bound): refuse both first.
        for name in FLOAT_OPTIONS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.seed not in SEED_RANGE:
            raise ValueError(f"seed must lie in [0, {SEED_RANGE.stop - 1}], got {self.seed}")
        positive = ["penalty_every", "hidden", "depth", "log_every", "eval_every",
                    "keep_checkpoints"]
        positive += [name for name in ("steps", "n_critic", "batch_size", "noise_dim", "eval_samples",
                                       "width", "image_size") if getattr(self, name) is not None]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for field in dataclasses.fields(self):
            allowed = field.metadata.get("choices")
            value = getattr(self, field.name)
            optional = field.default is None  # None: the default of the loss or the data
            if allowed is not None and value not in allowed and not (value is None and optional):
                raise ValueError(f"{field.name} must be one of {allowed}, got {value!r}")
        if self.data_workers is not None and self.data_workers < 0:
            raise ValueError(f"data_workers must be >= 0, got {self.data_workers}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.gp_weight is not None and self.gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {self.gp_weight}")
        if self.clip <= 0:
            raise ValueError(f"clip must be > 0, got {self.clip}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must lie in [0, 1) (0 turns averaging off), got {self.ema}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"Adam betas must lie in [0, 1), got ({self.beta1}, {self.beta2})")

    def resolved(self, kind: str, data_dim: int = 2) -> TrainConfig:
        """A copy with every ``None`` replaced by the default of the loss and of the data kind
        (``toy``, ``vector`` of dimension ``data_dim``, or ``image``), and device ``auto`` by the
        device it picks here (``config.json`` records where the run trained; a resume on a machine
        where ``auto`` picks another device is refused, as its numbers would differ)."""
        self.validate()
        if kind not in DATA_KINDS:
            raise ValueError(f"kind must be one of {DATA_KINDS}, got {kind!r}")
        image = kind == "image"
        if self.architecture is not None and (self.architecture == "mlp") == image:
            raise ValueError(f"architecture {self.architecture!r} does not fit {kind} data "
                             f"({'dcgan or resnet' if image else 'mlp'})")
        clip = self.loss == "wgan-clip"

        def default(value, fallback):
            return fallback if value is None else value

        return dataclasses.replace(
            self,
            steps=default(self.steps, DEFAULT_STEPS.get(self.dataset, 2000)),
            batch_size=default(self.batch_size, 64 if image else 256),
            penalty=default(self.penalty, _LOSS_PENALTY[self.loss]),
            gp_weight=default(self.gp_weight, TOY_PENALTY_WEIGHT if kind == "toy" else PENALTY_WEIGHT),
            architecture=default(self.architecture, "dcgan" if image else "mlp"),
            noise_dim=default(self.noise_dim, {"toy": 2, "vector": data_dim, "image": 128}[kind]),
            eval_samples=default(self.eval_samples, 898 if image else 2500),
            n_critic=default(self.n_critic, 1 if self.loss == "gan" else 5),
            optimizer=default(self.optimizer, "rmsprop" if clip else "adam"),
            lr=default(self.lr, 5e-5 if clip else (1e-3 if kind == "toy" else 1e-4)),
            device=resolve_device(self.device),
        )

    def changes_from(self, saved: dict, allowed: tuple[str, ...] = ()) -> list[str]:
        """``"key: saved -> current"`` for every option, other than ``allowed``, in which this
        config differs from the ``saved`` one. An option that a config saved by an earlier
        version lacks counts as its default (that version behaved as the default does)."""
        defaults = dataclasses.asdict(TrainConfig())
        current = dataclasses.asdict(self)
        return [f"{key}: {saved.get(key, defaults[key])!r} -> {current[key]!r}"
                for key in sorted(current)
                if key not in allowed and saved.get(key, defaults[key]) != current[key]]

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)
