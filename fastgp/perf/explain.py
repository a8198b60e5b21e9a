"""``fastgp.explain(critic, example)``: how the engine reads a critic, before training with it.

For each operation of the critic's ``forward`` (as traced): what the code calls and where, and
the rule the engine maps it to; then either "readable" — ``fastgp.gradient_penalty`` and
``FusedCritic`` take the explicit passes — or the first operation that blocks them and why.
With an example batch it also counts, on that batch, the FLOPs of one critic step with the
penalty over one without it, for autograd's double backward (2 for any critic) and for the
explicit passes (5/3 for piecewise-linear critics; 2 when layers with curvature need a backward
over the x̂ rows), so the expected gain is known before anything is timed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from fastgp.engine.graph import LayerNode, Node
from fastgp.engine.trace import read_as_far_as_possible
from fastgp.models import paper_adam
from fastgp.perf.counting import count
from fastgp.perf.profile import critic_step


@dataclass
class Explanation:
    """What the engine makes of one critic (``str()`` gives the report)."""

    critic: str
    operations: list[dict[str, str]] = field(default_factory=list)
    readable: bool = False
    blocker: str | None = None
    curvature: bool = False
    flop_ratio_autograd: float | None = None
    flop_ratio_explicit: float | None = None

    def __str__(self) -> str:
        lines = [f"{self.critic}: {len(self.operations)} operations read"]
        width = max((len(op["op"]) for op in self.operations), default=0)
        for number, op in enumerate(self.operations, start=1):
            lines.append(f"  {number:>3}  {op['op']:<{width}}  -> {op['rule']:<22} {op['source']}")
        if self.readable:
            lines.append("readable: fastgp.gradient_penalty and FusedCritic take the explicit "
                         "passes" + (" (layers with curvature: a backward over the x̂ rows too)"
                                     if self.curvature else ""))
        else:
            lines.append(f"blocked: {self.blocker}")
        if self.flop_ratio_autograd is not None:
            explicit = (f"{self.flop_ratio_explicit:.2f}" if self.flop_ratio_explicit is not None
                        else "n/a (blocked)")
            lines.append(f"FLOPs of a critic step with the penalty / without: autograd "
                         f"{self.flop_ratio_autograd:.2f}, explicit passes {explicit}")
        return "\n".join(lines)


def _rule_name(node: Node) -> str:
    if node.meta:
        # Off the input's path: forward-only values; those with parameters get their
        # gradient from one first-order autograd call.
        return "off path (autograd)" if node.differentiable else "constant of the passes"
    rule = node.rule.rule if isinstance(node.rule, LayerNode) else node.rule
    name = type(rule).__name__.removesuffix("Rule")
    slope = getattr(rule, "negative_slope", None)
    if name == "Leaky":
        return f"LeakyReLU({slope:g})"
    return f"{name} + LeakyReLU({slope:g})" if slope is not None else name


def explain(critic: nn.Module, example: torch.Tensor | None = None) -> Explanation:
    """How the engine reads ``critic`` and, given an ``example`` batch ``(B, ...)`` in the
    critic's dtype and device, the FLOP ratio of a critic step with the penalty over one
    without, for autograd and for the explicit passes."""
    if not isinstance(critic, nn.Module):
        raise TypeError(f"critic must be an nn.Module, got {type(critic).__name__}")
    nodes, graph, blocker = read_as_far_as_possible(critic, list(critic.parameters()))
    report = Explanation(
        critic=type(critic).__name__,
        operations=[{"op": node.op, "rule": _rule_name(node),
                     "source": "" if node.source == "an unknown line" else node.source}
                    for node in nodes],
        readable=graph is not None, blocker=blocker,
        curvature=graph is not None and graph.curvature)
    if example is not None:
        report.flop_ratio_autograd, report.flop_ratio_explicit = _flop_ratios(
            critic, example, explicit=graph is not None)
    return report


def _flop_ratios(critic: nn.Module, example: torch.Tensor,
                 explicit: bool) -> tuple[float, float | None]:
    torch.manual_seed(0)
    fake = torch.randn_like(example)

    def flops(path: str | None) -> int:
        model = copy.deepcopy(critic)
        return count(critic_step, model, paper_adam(model.parameters()), example, fake, path)[0].flops

    without = flops(None)
    if without == 0:
        raise ValueError("the example step counts no FLOPs (a critic without matmuls or "
                         "convolutions): no ratio to report")
    return flops("reference") / without, (flops("tier2") / without if explicit else None)
