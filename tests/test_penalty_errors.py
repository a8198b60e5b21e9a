"""Bad input gets a clear error that says what was expected and what came, never a number."""

import pytest
import torch
from torch import nn

import fastgp


def _critic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


REAL = torch.randn(3, 4)
FAKE = torch.randn(3, 4)


@pytest.mark.parametrize(
    "real, fake, error, message",
    [
        (REAL, torch.randn(3, 5), ValueError, r"same shape, got \(3, 4\) and \(3, 5\)"),
        (REAL, torch.randn(2, 4), ValueError, r"same shape, got \(3, 4\) and \(2, 4\)"),
        (REAL, FAKE.double(), TypeError, "same dtype, got torch.float32 and torch.float64"),
        (REAL, torch.randn(3, 4, device="meta"), ValueError, "same device, got cpu and meta"),
        (torch.randn(0, 4), torch.randn(0, 4), ValueError, "real is an empty batch"),
        (torch.ones(3, 4, dtype=torch.int64), FAKE, TypeError,
         "real must be a floating-point tensor .* got torch.int64"),
        (REAL, torch.ones(3, 4, dtype=torch.int32), TypeError,
         "fake must be a floating-point tensor .* got torch.int32"),
        (torch.randn(3), torch.randn(3), ValueError, r"rank >= 2.*got shape \(3,\)"),
        ([[1.0, 2.0]], FAKE, TypeError, "real must be a torch.Tensor, got list"),
    ],
    ids=["feature_shape", "batch_size", "dtype", "device", "empty", "int_real", "int_fake",
         "rank1", "not_tensor"],
)
def test_mismatched_or_invalid_samples(real, fake, error, message):
    with pytest.raises(error, match=message):
        fastgp.gradient_penalty(_critic(), real, fake)


@pytest.mark.parametrize("name", ["real", "fake"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_names_the_tensor(name, bad):
    real, fake = REAL.clone(), FAKE.clone()
    {"real": real, "fake": fake}[name][1, 2] = bad
    with pytest.raises(ValueError, match=f"{name} contains 1 NaN/Inf"):
        fastgp.gradient_penalty(_critic(), real, fake)


def test_nan_check_can_be_skipped():
    real = REAL.clone()
    real[0, 0] = float("nan")
    critic = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    penalty = fastgp.gradient_penalty(critic, real, FAKE, eps=torch.full((3,), 0.5),
                                      check_inputs=False)
    assert torch.isnan(penalty)  # what the check exists to catch


@pytest.mark.parametrize(
    "critic, message",
    [
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), r"one value per sample.*\(3, 2\)"),
        (lambda x: x.sum(), r"one value per sample, shape \(3,\), \(3, 1\) or \(3, 1, ..., 1\), "
                            r"got \(\)"),
        (lambda x: x[:, :2].reshape(3, 1, 2, 1), r"got \(3, 1, 2, 1\)"),
        (lambda x: x[:, :1].reshape(1, 3), r"got \(1, 3\)"),
        (lambda x: torch.ones(3), "does not depend on its input"),
        (lambda x: (x.sum(1) > 0).float(), "does not depend on its input"),
        (lambda x: [x.sum(1)], "must return a tensor, got list"),
        ("not a critic", "critic must be an nn.Module or a callable, got str"),
    ],
    ids=["two_outputs", "scalar", "two_in_trailing_dims", "transposed", "constant", "detached",
         "list", "string"],
)
def test_bad_critic_output(critic, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fastgp.gradient_penalty(critic, REAL, FAKE)


@pytest.mark.parametrize("norm", [nn.BatchNorm1d(8), nn.SyncBatchNorm(8)])
def test_batchnorm_is_refused_with_opt_out(norm):
    critic = nn.Sequential(nn.Linear(4, 8), norm, nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(ValueError, match=r"contains (Sync)?BatchNorm.* at '1'.*allow_batchnorm=True"):
        fastgp.gradient_penalty(critic, REAL, FAKE)
    if isinstance(norm, nn.BatchNorm1d) and not isinstance(norm, nn.SyncBatchNorm):
        penalty = fastgp.gradient_penalty(critic, REAL, FAKE, allow_batchnorm=True)
        assert torch.isfinite(penalty)


@pytest.mark.parametrize(
    "eps, error, message",
    [
        (torch.rand(3, 1), ValueError, r"eps must have shape \(B,\) = \(3,\).*got \(3, 1\)"),
        (torch.rand(4), ValueError, r"eps must have shape \(B,\) = \(3,\).*got \(4,\)"),
        (torch.ones(3, dtype=torch.int64), TypeError, "eps must be a floating-point tensor"),
        (torch.tensor([0.5, 1.5, 0.2]), ValueError, r"eps must lie in \[0, 1\]"),
        (0.5, TypeError, "eps must be a torch.Tensor"),
    ],
    ids=["rank2", "length", "int", "range", "float"],
)
def test_bad_eps(eps, error, message):
    with pytest.raises(error, match=message):
        fastgp.gradient_penalty(_critic(), REAL, FAKE, eps=eps)


def test_bad_condition():
    with pytest.raises(ValueError, match=r"cond\[0\] must have one row per sample .*3.*got shape \(2,\)"):
        fastgp.gradient_penalty(_critic(), REAL, FAKE, cond=torch.zeros(2))
    with pytest.raises(TypeError, match=r"cond\[1\] must be a torch.Tensor, got int"):
        fastgp.gradient_penalty(_critic(), REAL, FAKE, cond=(torch.zeros(3), 7))


def test_r1_and_dragan_check_their_inputs():
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        fastgp.r1_penalty(_critic(), torch.ones(3, 4, dtype=torch.int64))
    bad = REAL.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="x contains 1 NaN/Inf"):
        fastgp.r1_penalty(_critic(), bad)
    with pytest.raises(ValueError, match="real contains 1 NaN/Inf"):
        fastgp.dragan_penalty(_critic(), bad)
    with pytest.raises(ValueError, match="real and noise must have the same shape"):
        fastgp.dragan_penalty(_critic(), REAL, noise=torch.rand(3, 5))


def test_batchnorm_in_eval_mode_is_a_per_sample_map_and_takes_the_fast_path():
    """Eval-mode BatchNorm with running statistics needs no opt-out: it is a per-channel affine
    map, and the explicit passes equal autograd's double backward through it."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.LeakyReLU(0.2),
                           nn.Linear(8, 1)).double()
    with torch.no_grad():
        critic(torch.randn(16, 4, dtype=torch.float64) * 3)  # running statistics of its own
    critic.eval()
    real, fake = REAL.double(), FAKE.double()
    eps = torch.rand(3, dtype=torch.float64)
    grads = {}
    for method in ("explicit", "autograd"):
        critic.zero_grad(set_to_none=True)
        fastgp.gradient_penalty(critic, real, fake, eps=eps, method=method).backward()
        grads[method] = [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                         for p in critic.parameters()]
    assert grads["explicit"][2].abs().sum() > 0  # γ of the BatchNorm gets a penalty gradient
    for explicit, autograd in zip(grads["explicit"], grads["autograd"], strict=True):
        torch.testing.assert_close(explicit, autograd, rtol=1e-10, atol=1e-12)
