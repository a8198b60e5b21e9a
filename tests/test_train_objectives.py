"""Every loss × penalty of the trainer against its formula written out with autograd in fp64;
engine and autograd paths agree; lazy regularization, clipping, schedules and initializations."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastgp.models import mlp
from fastgp.train import TrainConfig, Trainer
from fastgp.train.initialization import initialize_
from fastgp.train.objectives import Objectives, interpolate_gradient_norms

LAMBDA = 0.7


def _critic():
    torch.manual_seed(0)
    return mlp(3, 1, hidden=8, depth=2).double()


def _batches(batch=6):
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    fake = torch.randn(batch, 3, generator=generator, dtype=torch.float64) + 0.5
    return real, fake


def _objectives(critic, loss, penalty, critic_step="tier1", penalty_every=1, weight=LAMBDA):
    config = TrainConfig(loss=loss, penalty=penalty, gp_weight=weight, critic_step=critic_step,
                         penalty_every=penalty_every).resolved("toy")
    return Objectives(critic, config)


def _input_gradient(critic, x):
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(critic(x).sum(), x, create_graph=True)[0]


def _expected_loss(critic, loss, penalty, real, fake, rng):
    """The critic loss written out from its definition (draws in the trainer's order)."""
    real_scores, fake_scores = critic(real), critic(fake)
    if loss == "gan":
        main = (F.binary_cross_entropy_with_logits(real_scores, torch.ones_like(real_scores))
                + F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores)))
    else:
        main = fake_scores.mean() - real_scores.mean()
    if penalty in ("gp", "lp"):
        eps = torch.rand(real.shape[0], generator=rng, dtype=real.dtype)[:, None]
        norms = _input_gradient(critic, eps * real + (1 - eps) * fake).norm(dim=1)
        excess = norms - 1 if penalty == "gp" else (norms - 1).clamp(min=0)
        return main + LAMBDA * (excess ** 2).mean()
    if penalty in ("r1", "r2"):
        points = real if penalty == "r1" else fake
        return main + LAMBDA / 2 * (_input_gradient(critic, points) ** 2).sum(dim=1).mean()
    if penalty == "dragan":
        noise = torch.rand(real.shape, generator=rng, dtype=real.dtype)
        eps = torch.rand(real.shape[0], generator=rng, dtype=real.dtype)[:, None]
        perturbed = real + 0.5 * real.std() * noise
        norms = _input_gradient(critic, eps * real + (1 - eps) * perturbed).norm(dim=1)
        return main + LAMBDA * ((norms - 1) ** 2).mean()
    return main


def _gradients(critic):
    return torch.cat([p.grad.flatten() for p in critic.parameters()])


@pytest.mark.parametrize("loss", ["wgan-gp", "gan"])
@pytest.mark.parametrize("penalty", ["gp", "lp", "r1", "r2", "dragan", "none"])
def test_autograd_critic_step_matches_the_written_out_loss(loss, penalty):
    critic = _critic()
    real, fake = _batches()
    stats = _objectives(critic, loss, penalty).critic_step(
        real, fake, True, rng=torch.Generator().manual_seed(5))
    got = _gradients(critic)
    expected_loss = _expected_loss(critic, loss, penalty, real, fake, torch.Generator().manual_seed(5))
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(expected_loss, list(critic.parameters()))])
    assert torch.linalg.vector_norm(got - expected) <= 1e-10 * torch.linalg.vector_norm(expected)
    assert stats.loss.item() == pytest.approx(expected_loss.item(), rel=1e-12)


@pytest.mark.parametrize("penalty", ["gp", "lp", "r1", "r2", "none"])
def test_engine_and_autograd_paths_give_the_same_gradients(penalty):
    real, fake = _batches(9)
    gradients, losses = [], []
    for path in ("engine", "tier1"):
        critic = _critic()
        objectives = _objectives(critic, "wgan-gp", penalty, critic_step=path)
        assert (objectives.engine is not None) == (path == "engine")
        stats = objectives.critic_step(real, fake, True, rng=torch.Generator().manual_seed(2))
        gradients.append(_gradients(critic))
        losses.append(stats.loss.item())
    difference = torch.linalg.vector_norm(gradients[0] - gradients[1])
    assert difference <= 1e-10 * torch.linalg.vector_norm(gradients[1])
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)


def test_the_engine_is_used_only_where_it_computes_the_loss():
    critic = _critic()
    assert _objectives(critic, "gan", "r1", critic_step="auto").engine is None
    assert _objectives(critic, "wgan-gp", "dragan", critic_step="auto").engine is None
    assert _objectives(critic, "wgan-clip", None, critic_step="auto").engine is not None
    with pytest.raises(ValueError, match="BCE loss"):
        _objectives(critic, "gan", None, critic_step="engine")
    with pytest.raises(ValueError, match="no dragan penalty"):
        _objectives(critic, "wgan-gp", "dragan", critic_step="engine")


@pytest.mark.parametrize("path", ["engine", "tier1"])
def test_lazy_regularization_weights_the_penalty_by_its_interval(path):
    """Every 3rd critic step carries 3λ·P, the others the loss alone."""
    real, fake = _batches()
    lazy_critic, eager_critic = _critic(), _critic()
    lazy = _objectives(lazy_critic, "wgan-gp", "gp", path, penalty_every=3)
    eager = _objectives(eager_critic, "wgan-gp", "gp", path, weight=3 * LAMBDA)
    assert [lazy.penalty_due(i) for i in range(7)] == [True, False, False, True, False, False, True]
    lazy.critic_step(real, fake, True, rng=torch.Generator().manual_seed(3))
    eager.critic_step(real, fake, True, rng=torch.Generator().manual_seed(3))
    torch.testing.assert_close(_gradients(lazy_critic), _gradients(eager_critic), rtol=1e-12, atol=0)
    skipped = lazy.critic_step(real, fake, False)
    assert skipped.penalty.item() == 0 and skipped.norms is None
    expected = torch.autograd.grad(lazy_critic(fake).mean() - lazy_critic(real).mean(),
                                   list(lazy_critic.parameters()))
    torch.testing.assert_close(_gradients(lazy_critic), torch.cat([g.flatten() for g in expected]))


def test_interpolate_gradient_norms_are_input_gradient_norms():
    critic = _critic()
    real, fake = _batches()
    norms = interpolate_gradient_norms(critic, real, fake, rng=torch.Generator().manual_seed(4))
    eps = torch.rand(real.shape[0], generator=torch.Generator().manual_seed(4), dtype=real.dtype)[:, None]
    expected = _input_gradient(critic, eps * real + (1 - eps) * fake).norm(dim=1)
    torch.testing.assert_close(norms, expected.detach(), rtol=1e-12, atol=0)


def _tiny(**changes):
    return TrainConfig(steps=4, eval_every=2, eval_samples=64, hidden=16, log_every=1, **changes)


def test_weight_clipping_run_keeps_critic_weights_in_the_box(tmp_path):
    trainer = Trainer(_tiny(loss="wgan-clip", clip=0.05), tmp_path, progress=False)
    assert isinstance(trainer.critic_optimizer, torch.optim.RMSprop)
    assert trainer.config.lr == 5e-5 and trainer.config.penalty == "none"
    trainer.run()
    values = torch.cat([p.detach().flatten() for p in trainer.critic.parameters()]).abs()
    bound = torch.tensor(0.05)  # in the parameters' dtype
    assert (values <= bound).all()
    assert (values == bound).any()  # the bound is active, not merely respected by chance


def test_bce_gan_run_logs_finite_metrics_and_no_penalty_share(tmp_path):
    trainer = Trainer(_tiny(loss="gan"), tmp_path, progress=False)
    assert trainer.config.n_critic == 1 and trainer.objectives.engine is None
    final = trainer.run()
    assert final["penalty_share"] == 0.0
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=True))
        assert float(row["penalty"]) == 0.0 and math.isfinite(float(row["grad_norm_mean"]))


def test_linear_schedule_decays_to_zero_and_is_logged(tmp_path):
    trainer = Trainer(_tiny(lr_schedule="linear", lr=1e-3), tmp_path, progress=False)
    assert [trainer.learning_rate(s) for s in (0, 2, 4)] == pytest.approx([1e-3, 5e-4, 0.0])
    trainer.run()
    logged = [float(line.split(",")[8]) for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert logged == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    constant = Trainer(_tiny(lr_schedule="constant", lr=1e-3), tmp_path / "c", progress=False)
    assert constant.learning_rate(3) == 1e-3


def test_penalty_share_is_measured_for_penalized_runs(tmp_path):
    final = Trainer(_tiny(), tmp_path, progress=False).run()
    assert 0 < final["penalty_share"] < 1
    rows = (tmp_path / "evaluations.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # header, step 2, final
    assert final["emd"] > final["emd_floor"] > 0


def test_config_resolves_per_loss_defaults_and_refuses_bad_values():
    assert TrainConfig().resolved("toy").gp_weight == 0.1
    assert TrainConfig().resolved("toy").steps == 2000
    assert TrainConfig(dataset="25gaussians").resolved("toy").steps == 6000
    assert TrainConfig().resolved("toy").lr == 1e-3 and TrainConfig().resolved("image").lr == 1e-4
    assert TrainConfig().resolved("image").gp_weight == 10.0
    resolved = TrainConfig(loss="wgan-lp").resolved("toy")
    assert (resolved.penalty, resolved.n_critic, resolved.optimizer) == ("lp", 5, "adam")
    assert TrainConfig(loss="gan", penalty="r1", n_critic=2).resolved("toy").n_critic == 2
    for bad, message in [({"loss": "hinge"}, "loss must be one of"),
                         ({"penalty": "gp2"}, "penalty must be one of"),
                         ({"ema": 1.0}, "ema must lie in"),
                         ({"clip": 0}, "clip must be > 0"),
                         ({"penalty_every": 0}, "penalty_every must be >= 1"),
                         ({"n_critic": 0}, "n_critic must be >= 1")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad).validate()


def test_initialization_schemes_follow_their_definitions():
    torch.manual_seed(0)
    layer = torch.nn.Linear(300, 200)
    before = layer.weight.detach().clone()
    initialize_(layer, "pytorch")
    assert torch.equal(layer.weight, before)
    initialize_(layer, "he")
    bound = math.sqrt(6 / 300)
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.95 * bound
    assert layer.bias.abs().max() == 0
    initialize_(layer, "xavier")
    assert layer.weight.abs().max() <= math.sqrt(6 / 500)
    initialize_(layer, "orthogonal")
    torch.testing.assert_close(layer.weight @ layer.weight.T, torch.eye(200), atol=1e-5, rtol=0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.BatchNorm2d(64))
    initialize_(network, "dcgan")
    assert network[0].weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert network[1].weight.mean().item() == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="unknown initialization"):
        initialize_(network, "lecun")


def test_compiled_engine_step_equals_eager_and_autograd_refuses_compile():
    torch._dynamo.reset()
    real, fake = (t.float() for t in _batches(16))
    gradients = []
    for compile_step in (False, True):
        critic = _critic().float()
        config = TrainConfig(gp_weight=LAMBDA, compile=compile_step, penalty_every=2).resolved("toy")
        objectives = Objectives(critic, config)
        steps = []
        for index in range(3):  # penalty, no penalty, penalty: both graphs
            objectives.critic_step(real, fake, objectives.penalty_due(index),
                                   rng=torch.Generator().manual_seed(index))
            steps.append(_gradients(critic).clone())
        gradients.append(torch.cat(steps))
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="double backward"):
        Objectives(_critic(), TrainConfig(loss="gan", compile=True).resolved("toy"))
