"""One table of bad arguments over every public entry point: each is refused with the same rule
and a message that names the argument (fastgp.validation)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import fastgp
from fastgp import validation

NAN, INF = math.nan, math.inf


def _critic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))


def _batch():
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator))


def _with_nan(tensor):
    tensor = tensor.clone()
    tensor[1, 2] = NAN
    return tensor


# Each entry point called with one keyword changed; ``real`` may be replaced to test the samples.
ENTRY_POINTS = {
    "gradient_penalty": lambda real, fake, **kw: fastgp.gradient_penalty(_critic(), real, fake, **kw),
    "dragan_penalty": lambda real, fake, **kw: fastgp.dragan_penalty(_critic(), real, **kw),
    "r1_penalty": lambda real, fake, **kw: fastgp.r1_penalty(_critic(), real, **kw),
    "FusedCritic.step": lambda real, fake, **kw: fastgp.FusedCritic(_critic()).step(real, fake, **kw),
    "FusedCritic.step(r1)": lambda real, fake, **kw: fastgp.FusedCritic(_critic()).step(
        real, fake, penalty="r1", **kw),
    "norm_penalty": lambda real, fake, **kw: fastgp.norm_penalty(real, **kw),
    "FusedCritic": lambda real, fake, **kw: fastgp.FusedCritic(_critic(), **kw),
    "profile_gp": lambda real, fake, **kw: fastgp.profile_gp(
        _critic(), real, fake, **({"repeats": 1, "warmup": 0} | kw)),
    "clip_weights_": lambda real, fake, **kw: fastgp.clip_weights_(_critic(), **kw),
}

ALL_WEIGHTED = ["gradient_penalty", "dragan_penalty", "FusedCritic.step", "norm_penalty",
                "profile_gp"]
GAMMA = {"r1_penalty": "gamma", "FusedCritic.step(r1)": "weight"}
EPS_TAKERS = ["gradient_penalty", "dragan_penalty", "FusedCritic.step"]
SAMPLE_TAKERS = ["gradient_penalty", "dragan_penalty", "r1_penalty", "FusedCritic.step"]
FLAG_TAKERS = ["gradient_penalty", "dragan_penalty", "r1_penalty", "FusedCritic.step"]

CASES = (
    # (entry point, keyword arguments, error type, message pattern)
    [(entry, {"weight": value}, error, pattern) for entry in ALL_WEIGHTED for value, error, pattern in [
        (-10.0, ValueError, "weight must be >= 0, got -10"),
        (NAN, ValueError, "weight must be finite, got nan"),
        (INF, ValueError, "weight must be finite, got inf"),
        (True, TypeError, "weight must be a real number, got bool"),
        ("10", TypeError, "weight must be a real number, got str"),
        (torch.tensor(10.0, requires_grad=True), TypeError, "weight must be a constant"),
        (torch.ones(2), TypeError, "weight must be a number, got a tensor of shape"),
    ]]
    + [(entry, {keyword: value}, ValueError, f"gamma must be {text}")
       for entry, keyword in GAMMA.items()
       for value, text in [(-10.0, ">= 0, got -10"), (NAN, "finite"), (INF, "finite")]]
    + [(entry, {"center": value}, ValueError, pattern)
       for entry in ["gradient_penalty", "dragan_penalty", "FusedCritic.step", "norm_penalty"]
       for value, pattern in [(NAN, "center must be finite"), (-INF, "center must be finite"),
                              (-1.0, "center must be >= 0")]]
    + [(entry, {"one_sided": value}, TypeError, "one_sided must be True or False")
       for entry in ["gradient_penalty", "norm_penalty"] for value in ["no", 1, None]]
    + [(entry, {"eps": value}, ValueError, pattern) for entry in EPS_TAKERS
       for value, pattern in [(torch.full((4,), 3.0), "eps must lie in \\[0, 1\\].*from 3 to 3"),
                              (torch.tensor([0.5, NAN, 0.5, 0.5]), "eps must lie in .*NaN"),
                              (torch.tensor([0.5, -0.1, 0.5, 0.5]), "eps must lie in \\[0, 1\\]")]]
    + [(entry, {"real": "nan"}, ValueError, "(real|x) contains 1 NaN/Inf") for entry in SAMPLE_TAKERS]
    + [(entry, {"check_inputs": "yes"}, TypeError, "check_inputs must be True or False")
       for entry in FLAG_TAKERS]
    + [(entry, {"return_norms": 1}, TypeError, "return_norms must be True or False")
       for entry in ["gradient_penalty", "r1_penalty", "dragan_penalty"]]
    + [("dragan_penalty", {"scale": -0.5}, ValueError, "scale must be >= 0"),
       ("dragan_penalty", {"scale": NAN}, ValueError, "scale must be finite"),
       ("gradient_penalty", {"allow_batchnorm": "false"}, TypeError, "allow_batchnorm must be True"),
       ("FusedCritic.step", {"micro_batch": 0}, ValueError, "micro_batch must be an integer >= 1"),
       ("FusedCritic.step", {"micro_batch": 2.0}, TypeError, "micro_batch must be an integer"),
       ("FusedCritic.step", {"penalty": "wgan"}, ValueError, "unknown penalty 'wgan'"),
       ("FusedCritic", {"penalty_every": 0}, ValueError, "penalty_every must be an integer >= 1"),
       ("FusedCritic", {"penalty_every": 1.5}, TypeError, "penalty_every must be an integer"),
       ("FusedCritic", {"penalty_every": True}, TypeError, "penalty_every must be an integer"),
       ("FusedCritic", {"channels_last": "yes"}, TypeError, "channels_last must be True or False"),
       ("FusedCritic", {"backend": "cuda"}, ValueError, "backend must be one of"),
       ("profile_gp", {"repeats": 0}, ValueError, "repeats must be an integer >= 1"),
       ("profile_gp", {"warmup": -1}, ValueError, "warmup must be an integer >= 0"),
       ("profile_gp", {"real": "nan"}, ValueError, "real contains 1 NaN"),
       ("clip_weights_", {"clip": 0.0}, ValueError, "clip must be > 0"),
       ("clip_weights_", {"clip": NAN}, ValueError, "clip must be finite")]
)


@pytest.mark.parametrize("entry,kwargs,error,pattern", CASES,
                         ids=[f"{c[0]}-{next(iter(c[1]))}-{i}" for i, c in enumerate(CASES)])
def test_every_entry_point_refuses_the_same_nonsense(entry, kwargs, error, pattern):
    real, fake = _batch()
    kwargs = dict(kwargs)
    if kwargs.pop("real", None) == "nan":
        real = _with_nan(real)
    with pytest.raises(error, match=pattern):
        ENTRY_POINTS[entry](real, fake, **kwargs)


@pytest.mark.parametrize("entry", ["gradient_penalty", "r1_penalty", "dragan_penalty"])
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_autograd_penalties_blame_disabled_gradients_not_the_critic(entry, mode):
    real, fake = _batch()
    with mode(), pytest.raises(RuntimeError, match=f"{entry} was called (with gradients disabled|"
                                                   "under torch.inference_mode)"):
        ENTRY_POINTS[entry](real, fake)


def test_the_engine_step_needs_no_autograd_and_gives_the_same_gradients_under_no_grad():
    real, fake = _batch()
    eps = torch.rand(4)
    critic = _critic()
    fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    expected = [p.grad.clone() for p in critic.parameters()]
    with torch.no_grad():
        fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    assert all(torch.equal(p.grad, g) for p, g in zip(critic.parameters(), expected, strict=True))


@pytest.mark.parametrize("value,expected", [
    (3, 3.0), (2.5, 2.5), (np.float32(0.25), 0.25), (np.int64(7), 7.0), (torch.tensor(4.0), 4.0),
])
def test_numbers_of_every_common_kind_are_accepted(value, expected):
    assert validation.real_number("weight", value, minimum=0.0) == expected
    real, fake = _batch()
    assert torch.isfinite(fastgp.gradient_penalty(_critic(), real, fake, weight=value))


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_, torch.tensor(True)])
def test_booleans_of_every_common_kind_are_flags(value):
    assert validation.flag("one_sided", value) is bool(value)


def test_the_checked_values_reach_the_penalty():
    """A numpy λ, a 0-d tensor λ and a plain float give the same penalty; λ = 0 gives 0."""
    real, fake = _batch()
    eps = torch.rand(4)
    values = [fastgp.gradient_penalty(_critic(), real, fake, weight=w, eps=eps)
              for w in (2.0, np.float64(2.0), torch.tensor(2.0))]
    assert values[0].item() > 0 and all(torch.equal(v, values[0]) for v in values)
    assert fastgp.gradient_penalty(_critic(), real, fake, weight=0.0, eps=eps).item() == 0.0
