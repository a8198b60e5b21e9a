"""Mixed precision: the critic step under bf16/fp16 autocast against the fp64 oracle, the fp16
loss-scaling recipe for the penalty, and runs that train and resume in both."""

import copy

import pytest
import torch

from fastgp.models import mlp
from fastgp.penalty import gradient_penalty
from fastgp.train import TrainConfig, Trainer
from fastgp.train.objectives import Objectives
from fastgp.train.run_folder import load_checkpoint

WEIGHT = 10.0


class Scaled(torch.nn.Module):
    """``scale · f(x)``: in fp16 the backward's ``scale · grad`` underflows for tiny scales."""

    def __init__(self, inner, scale):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        return self.inner(x) * self.scale


def _setup(output_scale=None):
    torch.manual_seed(0)
    critic = mlp(3, 1, hidden=64, depth=3)
    if output_scale is not None:
        critic = Scaled(critic, output_scale)
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(64, 3, generator=generator)
    fake = torch.randn(64, 3, generator=generator) + 0.5
    eps = torch.rand(64, generator=torch.Generator().manual_seed(3))  # what the step draws
    return critic, real, fake, eps


def _oracle(critic, real, fake, eps):
    """WGAN-GP critic loss in fp64 with the same ε: penalty, norms, parameter gradients."""
    critic = copy.deepcopy(critic).double()
    real, fake, eps = real.double(), fake.double(), eps.double()[:, None]
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    norms = grad.norm(dim=1)
    penalty = WEIGHT * ((norms - 1) ** 2).mean()
    loss = critic(fake).mean() - critic(real).mean() + penalty
    grads = torch.autograd.grad(loss, list(critic.parameters()))
    return penalty.detach(), norms.detach(), torch.cat([g.flatten() for g in grads])


def _pytorch_autocast(critic, real, fake, eps, dtype, scale):
    """The same loss written in plain PyTorch under autocast (scaled input gradient for fp16):
    PyTorch's own error in that dtype."""
    x_hat = (eps[:, None] * real + (1 - eps[:, None]) * fake).requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        scores = critic(x_hat) * scale
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = (grad.float() / scale).norm(dim=1)
    penalty = WEIGHT * ((norms - 1) ** 2).mean()
    with torch.autocast("cpu", dtype=dtype):
        main = critic(fake).float().mean() - critic(real).float().mean()
    grads = torch.autograd.grad(main + penalty, list(critic.parameters()))
    return penalty.detach(), norms.detach(), torch.cat([g.flatten() for g in grads]).double()


def _step(critic, real, fake, precision, init_scale=1024.0):
    # CPU tensors: autocast must be the CPU's, also where the default device would be a GPU
    config = TrainConfig(gp_weight=WEIGHT, precision=precision, device="cpu").resolved("toy")
    objectives = Objectives(critic, config)
    assert (objectives.engine is None) == (precision != "fp32")  # autocast: the autograd path
    if objectives.scaler is not None:
        objectives.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    stats = objectives.critic_step(real, fake, True, rng=torch.Generator().manual_seed(3))
    grads = torch.cat([p.grad.flatten() for p in critic.parameters()]).double()
    if objectives.scaler is not None:
        grads = grads / objectives.scaler.get_scale()
    return stats, grads


def _relative(a, b):
    return (torch.linalg.vector_norm(a.double() - b) / torch.linalg.vector_norm(b)).item()


@pytest.mark.parametrize("precision, dtype, tolerance",
                         [("bf16", torch.bfloat16, 2e-2), ("fp16", torch.float16, 3e-3)])
def test_mixed_precision_step_matches_the_fp64_oracle_within_its_dtype(precision, dtype, tolerance):
    """Relative error vs fp64 ≤ the dtype's tolerance or 2× PyTorch's own error in that dtype,
    whichever is larger (a ReLU whose pre-activation rounds across 0 flips a sample's mask)."""
    critic, real, fake, eps = _setup()
    expected = _oracle(critic, real, fake, eps)
    own = _pytorch_autocast(critic, real, fake, eps, dtype, 1024.0 if precision == "fp16" else 1.0)
    stats, got = _step(critic, real, fake, precision)
    assert stats.norms.dtype == torch.float32 and stats.penalty.dtype == torch.float32
    for value, reference, pytorch in zip((stats.penalty, stats.norms, got), expected, own, strict=True):
        assert _relative(value, reference) <= max(tolerance, 2 * _relative(pytorch, reference))
    fp32_stats, fp32_grads = _step(copy.deepcopy(critic), real, fake, "fp32")
    assert _relative(fp32_grads, expected[2]) <= 1e-5  # and fp32 is fp32-exact


def test_fp16_penalty_needs_the_scaled_input_gradient():
    """A critic whose output is scaled by 1e-8: unscaled, its backward underflows in fp16; the
    recipe (gradient of the scaled scores, unscaled in fp32 before the norm) keeps it."""
    critic, real, fake, eps = _setup(output_scale=1e-8)
    _, norms, _ = _oracle(critic, real, fake, eps)
    # 2¹⁵: where GradScaler settles after its first step (2¹⁶ times the score gradient 1 is
    # inf in fp16, so the default first step is always skipped).
    stats, _ = _step(critic, real, fake, "fp16", init_scale=2.0 ** 15)
    assert _relative(stats.norms, norms) <= 3e-3
    with torch.autocast("cpu", dtype=torch.float16):
        _, unscaled_norms = gradient_penalty(critic, real, fake, eps=eps, weight=WEIGHT,
                                             return_norms=True)
    assert _relative(unscaled_norms, norms) > 0.1  # what the recipe prevents


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_train_and_resume_exactly(tmp_path, precision):
    def config(steps):
        return TrainConfig(steps=steps, eval_every=2, eval_samples=64, hidden=16, log_every=1,
                           precision=precision, lr_schedule="constant")

    whole = Trainer(config(4), tmp_path / "whole", progress=False)
    assert whole.critic_step_name.startswith("tier1")
    whole.run()
    Trainer(config(2), tmp_path / "split", progress=False).run()
    assert ("scalers" in load_checkpoint(tmp_path / "split" / "checkpoint.pt")) == (precision == "fp16")
    resumed = Trainer(config(4), tmp_path / "split", progress=False, resume=True)
    resumed.run()
    for a, b in zip(whole.critic.parameters(), resumed.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not run under autocast"):
        Trainer(TrainConfig(precision=precision, critic_step="engine"), tmp_path / "x", progress=False)
