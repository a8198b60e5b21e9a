"""A critic as a DAG of rules: values used twice (skips, branches) and ops of several inputs.

The four passes of :mod:`fastgp.engine.base` over a graph whose node ``k`` applies a rule to the
outputs of earlier nodes (node 0 is the critic's input ``x``)::

    forward   v_k = f_k(v_i, v_j, …)                      in node order
    adjoint   a_i += (∂f_k/∂v_i)ᵀ a_k                     in reverse order, from a_out = 1
    tangent   t_k = Σ_i (∂f_k/∂v_i) t_i                   in node order, from t_0 = ∂P/∂g
    backward  g_i += (∂f_k/∂v_i)ᵀ g_k  (+ h̄ terms)        in reverse order

A value read by several nodes gets the sum of their cotangents (fan-out); its tangent is shared.
Cotangents are summed out of place, since rules may keep the tensors they were given.
Values and tangents are dropped after their last reader, as a sequence would.

Values off the input's path (``meta`` nodes: shapes, conditions, constants made from them) are
computed in the forward only; they have no tangent. Those that depend on parameters — a label
embedding ``e = E[y]`` of a projection critic, a learned gain — are ``differentiable``: they are
computed with autograd recording (first order, independent of x), the rules that combine them
with the path collect their cotangents ``f̄`` in every pass, and :meth:`GraphRule.factor_gradients`
adds ``(∂f/∂θ)ᵀ f̄`` to the parameters' gradients with one ``autograd.grad`` call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fastgp.engine.base import Rule, Saved, StepContext
from fastgp.engine.spectral import ParameterPositions


class NodeRule:
    """A rule over a node's tensor inputs (one or more) and, in the forward, its original call.

    ``forward`` gets the input values and ``call``, which runs the op exactly as the critic's
    code wrote it (with shape arguments evaluated on this pass's tensors); rules of linear ops
    record what their other passes need from it.
    """

    curvature: bool = False

    def forward(self, inputs: list[torch.Tensor], call: Callable[[], Any],
                ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        raise NotImplementedError  # every concrete rule defines its forward

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> list[torch.Tensor]:
        raise NotImplementedError

    def tangent(self, saved: Saved, t_in: list[torch.Tensor], ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: list[bool]) -> list[torch.Tensor | None]:
        raise NotImplementedError


class LayerNode(NodeRule):
    """A one-input :class:`~fastgp.engine.base.Rule` (a layer) as a graph node."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.curvature = rule.curvature

    def forward(self, inputs, call, ctx):
        return self.rule.forward(inputs[0], ctx)

    def adjoint(self, saved, a_out, ctx):
        return [self.rule.adjoint(saved, a_out, ctx)]

    def tangent(self, saved, t_in, ctx):
        return self.rule.tangent(saved, t_in[0], ctx)

    def backward(self, saved, g_out, ctx, need_input):
        return [self.rule.backward(saved, g_out, ctx, need_input[0])]


@dataclass
class Node:
    """One step of the graph: ``rule`` over the tensor values ``inputs`` (node indices, 0 = x).

    ``call`` maps the list of all values computed so far to the op's original call, for the
    forward; ``reads`` are all the values it uses (tensors and the Python values of shape
    queries). ``meta`` nodes compute Python values (sizes) from shapes: they run in the
    forward only and have no rule.
    """

    name: str
    rule: NodeRule | None
    inputs: list[int]
    reads: list[int]
    call: Callable[[list[Any]], Callable[[], Any]]
    meta: bool = False
    #: A meta value that depends on parameters: computed with autograd recording.
    differentiable: bool = False
    op: str = ""  # what the critic's code calls there, and where (for fastgp.explain)
    source: str = ""


class GraphRule(Rule):
    """The passes over a DAG of :class:`Node` whose last node is the critic's output."""

    def __init__(self, nodes: list[Node], output: int | None = None, inputs: int = 1,
                 positions: ParameterPositions | None = None) -> None:
        self.nodes = nodes
        self.inputs = inputs  # x, then the conditions (constants of the pass: no gradient)
        #: Where each gradient goes: the parameters, then the spectral-norm weights' slots.
        self.positions = positions if positions is not None else ParameterPositions([])
        # Values are indexed x = 0, conditions 1 … inputs−1, then node k (1-based) at k + extra.
        self.extra = inputs - 1
        count = len(nodes) + inputs
        self.output = count - 1 if output is None else output  # the value the critic returns
        self.curvature = any(node.rule is not None and node.rule.curvature for node in nodes)
        # The last node (position) reading each value / each tangent, to free them early.
        self.last_read = [0] * count
        self.last_tangent_read = [0] * count
        for position, node in enumerate(nodes, start=1):
            for index in node.reads:
                self.last_read[index] = position
            for index in node.inputs:
                self.last_tangent_read[index] = position
        self.last_read[self.output] = self.last_tangent_read[self.output] = len(nodes) + 1
        self.tensor_nodes = [(position, node) for position, node in enumerate(nodes, start=1)
                             if not node.meta]

    def forward(self, x: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Saved]:
        if len(ctx.conditions) != self.extra:
            raise ValueError(f"the critic takes {self.extra} conditional input(s) after x, got "
                             f"{len(ctx.conditions)}")
        values: list[Any] = [x, *ctx.conditions]
        tape: list[Saved | None] = []
        for position, node in enumerate(self.nodes, start=1):
            call = node.call(values)
            if node.meta:
                with torch.enable_grad() if node.differentiable else contextlib.nullcontext():
                    values.append(call())
                tape.append(None)
            else:
                value, saved = node.rule.forward([values[i] for i in node.inputs], call, ctx)
                values.append(value)
                tape.append(saved)
            for index in node.reads:
                if self.last_read[index] == position:
                    values[index] = None
        return values[self.output], {"tape": tape}

    @staticmethod
    def _accumulate(store: dict[int, torch.Tensor], index: int, value: torch.Tensor | None) -> None:
        if value is None:
            return
        current = store.get(index)
        store[index] = value if current is None else current + value

    def adjoint(self, saved: Saved, a_out: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        tape = saved["tape"]
        cotangents = {self.output: a_out}
        for position, node in reversed(self.tensor_nodes):
            a = cotangents.pop(position + self.extra, None)
            if a is None:
                continue  # the value does not reach the output
            for index, a_in in zip(node.inputs, node.rule.adjoint(tape[position - 1], a, ctx),
                                   strict=True):
                self._accumulate(cotangents, index, a_in)
        return cotangents[0]

    def tangent(self, saved: Saved, t_in: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        tape = saved["tape"]
        tangents: dict[int, torch.Tensor] = {0: t_in}
        for position, node in self.tensor_nodes:
            rule_saved = tape[position - 1]
            tangents[position + self.extra] = node.rule.tangent(
                rule_saved, [tangents[i] for i in node.inputs], ctx)
            if ctx.release_after_tangent:
                rule_saved.clear()
            for index in node.inputs:
                if self.last_tangent_read[index] == position:
                    tangents.pop(index, None)
        return tangents[self.output]

    def backward(self, saved: Saved, g_out: torch.Tensor, ctx: StepContext,
                 need_input: bool) -> torch.Tensor | None:
        tape = saved["tape"]
        cotangents = {self.output: g_out}
        for position, node in reversed(self.tensor_nodes):
            g = cotangents.pop(position + self.extra, None)
            rule_saved = tape[position - 1]
            if g is None:
                rule_saved.clear()
                continue
            need = [index > 0 or need_input for index in node.inputs]
            for index, g_in in zip(node.inputs, node.rule.backward(rule_saved, g, ctx, need),
                                   strict=True):
                self._accumulate(cotangents, index, g_in)
            rule_saved.clear()  # the backward is the last pass: free the node's tensors now
        return cotangents.get(0) if need_input else None

    def factor_gradients(self, ctx: StepContext) -> None:
        """Add ``(∂f/∂θ)ᵀ f̄`` of the off-path values ``f`` that depend on parameters (their
        cotangents ``f̄`` collected by the passes) to ``ctx.grads``: one first-order autograd
        call over graphs that do not involve x."""
        for factor, slot in ctx.factor_slots:  # kept: a later pass may add to them again
            if factor is not None and ctx.grads[slot] is not None:
                ctx.factor_cotangents.append((factor, ctx.grads[slot]))
            ctx.grads[slot] = None
        pairs = [(f, cotangent) for f, cotangent in ctx.factor_cotangents if f.requires_grad]
        ctx.factor_cotangents.clear()
        if not pairs:
            return
        parameters = [p for p in self.positions.parameters if p.requires_grad]
        factors, cotangents = zip(*pairs, strict=True)
        with torch.enable_grad():
            # retain_graph: a later pass may send the same values more cotangents (the graph
            # is freed with the values, after the step).
            grads = torch.autograd.grad(factors, parameters, cotangents, allow_unused=True,
                                        retain_graph=True)
        for parameter, grad in zip(parameters, grads, strict=True):
            if grad is not None:
                ctx.add_grad(self.positions(parameter), grad)
