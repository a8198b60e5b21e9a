"""profile_gp and the `fastgp profile` command on tiny critics (no timing is asserted)."""

import json

import pytest
import torch
from torch import nn

from fastgp.cli import main
from fastgp.engine.fused_critic import PHASES as ENGINE_PHASES
from fastgp.profile import PHASES, profile_gp


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))


@pytest.mark.parametrize("path", ["reference", "tier1"])
def test_profile_gp_reports_every_quantity(path):
    critic = _tiny()
    before = [p.detach().clone() for p in critic.parameters()]
    result = profile_gp(critic, torch.randn(4, 6), torch.randn(4, 6), path=path, repeats=2, warmup=1)
    assert list(result.phases) == list(PHASES) and all(v >= 0 for v in result.phases.values())
    assert result.gp_counts.flops > result.nogp_counts.flops > 0
    assert result.gp_counts.ops > result.nogp_counts.ops
    assert result.gp_step.repeats == 2 and result.overhead > 0
    data = result.as_dict()
    json.dumps(data)
    assert data["flop_ratio"] == pytest.approx(result.gp_counts.flops / result.nogp_counts.flops)
    table = result.format_table()
    for label in ("backward (incl. double backward)", "GP overhead", "floor", "modeled"):
        assert label in table
    # the caller's critic is not trained by the profiler
    assert all(torch.equal(a, b) for a, b in zip(before, critic.parameters(), strict=True))


def test_profile_gp_tier2_reports_the_engine_passes_at_the_flop_floor():
    critic = _tiny()
    result = profile_gp(critic, torch.randn(4, 6), torch.randn(4, 6), path="tier2", repeats=2,
                        warmup=1)
    assert list(result.phases) == [*ENGINE_PHASES, "optimizer"]
    assert all(v >= 0 for v in result.phases.values())
    # The explicit step costs less than twice the step without penalty (5/3 on large layers).
    assert result.nogp_counts.flops < result.gp_counts.flops < 2 * result.nogp_counts.flops
    assert "tangent (penalty's parameter gradients)" in result.format_table()


def test_profile_gp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown path 'fast'"):
        profile_gp(_tiny(), torch.randn(2, 6), torch.randn(2, 6), path="fast")
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        profile_gp(_tiny(), torch.randn(2, 6), torch.randn(2, 6), repeats=0)


def test_profile_command_with_user_factory(capsys):
    code = main(["profile", "--critic", "critics:tiny_critic", "--shape", "6", "--batch", "3",
                 "--repeats", "2", "--warmup", "1", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batch"] == 3 and data["sample_shape"] == [6]
    assert data["gp_step"]["flops"] > data["nogp_step"]["flops"]


def test_profile_command_table_for_builtin(capsys):
    assert main(["profile", "--critic", "mlp", "--batch", "4", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "batch 4 × 2" in out and "GP overhead" in out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--critic", "nomodule_xyz:factory", "--shape", "3"], "cannot import 'nomodule_xyz'"),
        (["--critic", "critics:missing", "--shape", "3"], "has no callable 'missing'"),
        (["--critic", "critics:tiny_critic"], "--shape is required"),
        (["--critic", "critics:tiny_critic", "--shape", "a,b"], "--shape must be positive integers"),
        (["--critic", "resnet"], "built-in name or package.module:factory"),
        (["--batch", "0"], "--batch must be >= 1"),
    ],
)
def test_profile_command_errors(arguments, message, capsys):
    assert main(["profile", *arguments]) == 2
    assert message in capsys.readouterr().err
