"""The configuration of a training run: every choice, with defaults that depend on the loss.

Options left at ``None`` take the default of the chosen loss when a run starts
(:meth:`TrainConfig.resolved`), and the resolved values are what ``config.json`` records:

============  ===========================  =====================  ======================
loss          penalty (weight on toy data)  critic steps, lr       optimizer
============  ===========================  =====================  ======================
wgan-gp       gp, λ = 0.1                   5, 1e-4                Adam (0.5, 0.9)
wgan-lp       lp (one-sided), λ = 0.1       5, 1e-4                Adam (0.5, 0.9)
wgan-clip     none, weights clipped ±0.01   5, 5e-5                RMSprop
gan           none                          1, 1e-4                Adam (0.5, 0.9)
============  ===========================  =====================  ======================

WGAN-GP and WGAN-LP follow Gulrajani et al. 2017 (λ = 0.1 on the toy sets, 10 on images) and
Petzka et al. 2018; weight clipping follows Arjovsky et al. 2017 (RMSprop, lr 5e-5, c = 0.01,
"momentum based optimizers such as Adam" made its training unstable); the BCE GAN takes one
discriminator step per generator step with the non-saturating generator loss (Goodfellow et al.
2014). Any loss may take any penalty (``penalty=``): R1/R2 (γ/2·E‖∇D‖², Mescheder et al. 2018)
and DRAGAN (Kodali et al. 2017) are the usual ones for the BCE GAN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

LOSSES = ("wgan-gp", "wgan-lp", "wgan-clip", "gan")
PENALTIES = ("gp", "lp", "r1", "r2", "dragan", "none")
OPTIMIZERS = ("adam", "rmsprop")
LR_SCHEDULES = ("constant", "linear")
INITIALIZATIONS = ("pytorch", "he", "xavier", "orthogonal", "dcgan")
CRITIC_STEPS = ("auto", "engine", "tier1")

_LOSS_PENALTY = {"wgan-gp": "gp", "wgan-lp": "lp", "wgan-clip": "none", "gan": "none"}
TOY_PENALTY_WEIGHT = 0.1  # the WGAN-GP paper's λ for its toy sets
IMAGE_PENALTY_WEIGHT = 10.0  # ... and for images


@dataclass
class TrainConfig:
    """Everything that defines a run; saved, resolved, as the run folder's ``config.json``."""

    dataset: str = "8gaussians"
    steps: int = 2000  # generator steps
    batch_size: int = 256
    loss: str = "wgan-gp"
    penalty: str | None = None  # None: the loss's own penalty (table above)
    gp_weight: float | None = None  # λ of GP/LP/DRAGAN, γ of R1/R2; None: 0.1 toy, 10 images
    penalty_every: int = 1  # lazy regularization: the penalty (× k) on every k-th critic step
    clip: float = 0.01  # weight clipping bound of wgan-clip
    n_critic: int | None = None  # critic steps per generator step; None: 5 (WGAN), 1 (gan)
    optimizer: str | None = None  # None: rmsprop for wgan-clip, adam otherwise
    lr: float | None = None  # None: 5e-5 for wgan-clip, 1e-4 otherwise
    beta1: float = 0.5
    beta2: float = 0.9
    lr_schedule: str = "linear"  # constant, or linear decay to 0 at the last step
    init: str = "pytorch"
    ema: float = 0.999  # decay of the generator's weight average used for samples; 0 turns it off
    hidden: int = 256
    depth: int = 3
    noise_dim: int = 2
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500
    eval_samples: int = 2500
    device: str = "cpu"
    critic_step: str = "auto"  # engine (FusedCritic), tier1 (autograd), auto: engine if it can
    keep_checkpoints: int = 3  # step-numbered copies kept in checkpoints/ besides checkpoint.pt

    def validate(self) -> None:
        positive = ["steps", "batch_size", "penalty_every", "hidden", "depth", "noise_dim",
                    "log_every", "eval_every", "eval_samples", "keep_checkpoints"]
        if self.n_critic is not None:
            positive.append("n_critic")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, allowed in [("loss", LOSSES), ("penalty", PENALTIES), ("optimizer", OPTIMIZERS),
                              ("lr_schedule", LR_SCHEDULES), ("init", INITIALIZATIONS),
                              ("critic_step", CRITIC_STEPS)]:
            value = getattr(self, name)
            if value not in allowed and not (value is None and name in ("penalty", "optimizer")):
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
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

    def resolved(self, toy_data: bool) -> TrainConfig:
        """A copy with every ``None`` replaced by the default of the loss (and of the data kind)."""
        self.validate()
        clip = self.loss == "wgan-clip"
        penalty = self.penalty if self.penalty is not None else _LOSS_PENALTY[self.loss]
        weight = self.gp_weight
        if weight is None:
            weight = TOY_PENALTY_WEIGHT if toy_data else IMAGE_PENALTY_WEIGHT
        return dataclasses.replace(
            self,
            penalty=penalty,
            gp_weight=weight,
            n_critic=self.n_critic if self.n_critic is not None else (1 if self.loss == "gan" else 5),
            optimizer=self.optimizer if self.optimizer is not None else ("rmsprop" if clip else "adam"),
            lr=self.lr if self.lr is not None else (5e-5 if clip else 1e-4),
        )

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)
