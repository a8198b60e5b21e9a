"""fastgp.explain and `fastgp explain`: the traced operations, their rules, the blocker, and the
FLOP ratios of a step with the penalty over one without."""

import pytest
import torch
from cli_helpers import one_line_error
from test_engine_trace import Bilinear, ResNetStyle
from torch import nn

import fastgp
from fastgp.cli import main


def test_a_readable_critic_lists_its_operations_rules_and_lines():
    report = fastgp.explain(ResNetStyle(), torch.randn(4, 3, 8, 8))
    assert report.readable and report.blocker is None and not report.curvature
    rules = [op["rule"] for op in report.operations]
    assert rules == ["Conv + LeakyReLU(0)", "Conv + LeakyReLU(0)", "Conv", "Scale", "Sum",
                     "LeakyReLU(0)", "Reduce", "Linear"]
    assert report.operations[6]["source"].startswith("test_engine_trace.py:")
    assert "h.sum(dim=(2, 3))" in report.operations[6]["source"]
    # Autograd's double backward doubles a step's FLOPs; the explicit passes are near 5/3
    # (the residual's sum and scale add no FLOPs, the head's matmuls a few).
    assert report.flop_ratio_autograd == pytest.approx(2.0, abs=0.1)
    assert report.flop_ratio_explicit == pytest.approx(5 / 3, abs=0.06)
    assert "readable" in str(report) and "explicit passes 1.7" in str(report)


def test_a_blocked_critic_names_the_blocking_operation():
    report = fastgp.explain(Bilinear())
    assert not report.readable and report.flop_ratio_autograd is None
    assert "bilinear" in report.blocker and "self.fc(x) * x" in report.blocker
    assert [op["rule"] for op in report.operations] == ["Linear"]  # read before the blocker
    assert str(report).splitlines()[-1].startswith("blocked: mul at test_engine_trace.py:")


def test_curvature_is_reported_and_costs_a_backward_over_the_interpolates():
    critic = nn.Sequential(nn.Linear(3, 16), nn.LayerNorm(16), nn.SiLU(), nn.Linear(16, 1))
    report = fastgp.explain(critic, torch.randn(8, 3))
    assert report.readable and report.curvature
    # The backward over the x̂ rows that carries the curvature terms costs what the double
    # backward saves: no FLOP gain here (docs/engine.md), and the report says so.
    assert report.flop_ratio_explicit >= 1.9 and report.flop_ratio_autograd >= 1.9
    assert "a backward over the x̂ rows too" in str(report)


def test_explain_command_prints_the_report(capsys):
    assert main(["explain", "--critic", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "Linear + LeakyReLU(0)" in out and "readable:" in out and "autograd 2.00" in out


@pytest.mark.parametrize("arguments,message", [
    (["--critic", "critics:tiny_critic"], "--shape is required"),
    (["--critic", "dcgan32", "--shape", "5"], "--shape 5 does not fit the critic dcgan32"),
    (["--batch", "0"], "--batch must be an integer >= 1"),
])
def test_explain_command_errors_are_one_line(arguments, message, capsys):
    assert main(["explain", *arguments]) == 2
    one_line_error(capsys.readouterr().err, "explain", message)
