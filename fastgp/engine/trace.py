"""Reading a critic from its code: ``torch.fx`` traces ``forward`` into a graph of rules.

Layers with a rule (Linear, ConvNd, activations, norms, pools, Flatten...) stay calls of their
module; everything else — the user's own modules and their ``forward``, ``nn.Sequential``,
:class:`fastgp.nn.Residual` — is traced through, so a critic is read as its code runs: skips
and branches become a DAG (:mod:`fastgp.engine.graph`), a module called twice becomes two nodes
on the same parameters, and the tensor ops between layers map to the rules of
:mod:`fastgp.engine.tensor_ops`. Shape queries (``x.size(0)``, ``x.shape``) are evaluated on each
pass's tensors.

In-place ops mean what eager PyTorch computes: ``x += y``, ``h.relu_()`` or ``ReLU(inplace=True)``
change the tensor itself, so every later reader of it (a skip connection included) reads the
changed value. The reader redirects those readers to the in-place op's result; an in-place op on
a tensor that another live view shares, or on the critic's input, is refused.

Anything without a rule — an unknown layer or function, Python control flow on tensor values,
a hook, a parameter used outside a layer — raises :class:`UnsupportedLayerError` that names it
and its source line.
"""

from __future__ import annotations

import builtins
import operator
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from fastgp.engine import activations as act
from fastgp.engine.affine import FlattenLinearRule
from fastgp.engine.base import Rule, UnsupportedLayerError
from fastgp.engine.functional import CONV_OPTIONS, FUNCTIONAL_AFFINE, FunctionalAffine
from fastgp.engine.graph import GraphRule, LayerNode, Node, NodeRule
from fastgp.engine.layers import layer_rule, leaky_slope, parameter_index, weight_slot
from fastgp.engine.linear_maps import PadRule
from fastgp.engine.readable import READABLE_CLASSES, check_no_global_hooks, check_readable
from fastgp.engine.spectral import ParameterPositions
from fastgp.engine.tensor_ops import (
    Concatenate,
    Multiply,
    Permute,
    Piece,
    Reduce,
    Reshape,
    Scale,
    Select,
    Shift,
    Sum,
)

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_FUSABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Tracer(fx.Tracer):
    """Stops at layers (the engine has rules for their classes, or refuses them by name)."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if isinstance(module, _CONTAINERS) or type(module).__module__.startswith("fastgp."):
            return False
        base = next((cls for cls in type(module).__mro__ if cls in READABLE_CLASSES), None)
        if base is not None and type(module).forward is base.forward:
            return True  # a layer (or a subclass that keeps its forward)
        return super().is_leaf_module(module, qualified_name)


def where(node: fx.Node) -> str:
    """``file:line (code)`` of the critic's source that made ``node``."""
    trace = node.stack_trace or ""
    found = [frame for frame in re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)', trace)
             if "/torch/" not in frame[0] and "/fastgp/engine/" not in frame[0]]
    if not found:
        return "an unknown line"
    path, line, code = found[-1]
    return f"{path.rsplit('/', 1)[-1]}:{line} ({code.strip()})"


def _user_line(error: BaseException) -> str:
    """The last frame of ``error``'s traceback outside torch and fastgp: the critic's line."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if "/torch/" not in frame.filename and "/fastgp/engine/" not in frame.filename]
    if not frames:
        return "an unknown line"
    frame = frames[-1]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} ({(frame.line or '').strip()})"


def trace(critic: nn.Module) -> fx.GraphModule:
    """The critic's ``forward`` as an fx graph, after the checks that tracing cannot make."""
    check_no_global_hooks()
    for name, module in critic.named_modules(remove_duplicate=False):
        check_readable(module, name)
    tracer = _Tracer()
    if tracer.is_leaf_module(critic, ""):
        critic = nn.Sequential(critic)  # a single layer: trace a call of it, not its forward
    try:
        graph = tracer.trace(critic)
    except Exception as error:  # fx raises TraceError, TypeError, RuntimeError... on user code
        raise UnsupportedLayerError(
            f"the critic's forward cannot be traced at {_user_line(error)}: {error}. Python "
            "control flow on tensor values (if/for over data) cannot be read as a graph; use "
            "fastgp.gradient_penalty, which works with any critic") from error
    return fx.GraphModule(critic, graph)


# --- in-place ops -------------------------------------------------------------------------------

_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub,
                      operator.imul: operator.mul, operator.itruediv: operator.truediv,
                      torch.relu_: torch.relu, F.relu_: F.relu, F.leaky_relu_: F.leaky_relu}
_FUNCTIONS_WITH_INPLACE_FLAG = {F.relu: 1, F.leaky_relu: 2, F.elu: 2, F.silu: 1, F.hardtanh: 3,
                                F.dropout: 3, F.dropout1d: 3, F.dropout2d: 3, F.dropout3d: 3}
_VIEW_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "transpose", "permute",
                 "t", "expand", "view_as", "narrow", "select", "unflatten", "movedim", "swapaxes",
                 "swapdims", "chunk", "split", "unbind", "__getitem__"}
_VIEW_FUNCTIONS = {torch.flatten, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute,
                   torch.reshape, torch.chunk, torch.split, torch.narrow, torch.select,
                   torch.movedim, operator.getitem}


def _inplace_target(node: fx.Node, root: nn.Module) -> fx.Node | None:
    """The node whose tensor ``node`` changes in place, if it does."""
    first = node.args[0] if node.args else None
    if not isinstance(first, fx.Node):
        return None
    if node.op == "call_method" and node.target.endswith("_") and not node.target.startswith("_"):
        return first
    if node.op == "call_function":
        if node.target in _INPLACE_FUNCTIONS:
            return first
        position = _FUNCTIONS_WITH_INPLACE_FLAG.get(node.target)
        if position is not None and (node.kwargs.get("inplace") or
                                     (len(node.args) > position and node.args[position] is True)):
            return first
    if node.op == "call_module" and getattr(root.get_submodule(node.target), "inplace", False):
        return first
    return None


def _is_view(node: fx.Node) -> bool:
    return ((node.op == "call_method" and node.target in _VIEW_METHODS)
            or (node.op == "call_function" and node.target in _VIEW_FUNCTIONS))


def _view_base(node: fx.Node) -> fx.Node:
    while _is_view(node) and isinstance(node.args[0], fx.Node):
        node = node.args[0]
    return node


def functionalize(module: fx.GraphModule) -> None:
    """Give in-place ops their eager meaning: later readers of a changed tensor read the
    in-place op's result. Refuse what would need aliasing to be modelled (views of the changed
    tensor read later, a change of the critic's input)."""
    order = {node: position for position, node in enumerate(module.graph.nodes)}
    for node in list(module.graph.nodes):
        target = _inplace_target(node, module)
        if target is None:
            continue
        if target.op == "placeholder" or _view_base(target).op == "placeholder":
            raise UnsupportedLayerError(
                f"{_describe(node)} at {where(node)} changes the critic's input in place; "
                "autograd refuses that too (the input is a leaf that requires grad)")
        base = _view_base(target)
        aliases = {n for n in module.graph.nodes if n is not node and _is_view(n)
                   and _view_base(n) is base} | ({base} if base is not target else set())
        for alias in aliases:
            if any(order[user] > order[node] for user in alias.users):
                raise UnsupportedLayerError(
                    f"{_describe(node)} at {where(node)} changes a tensor in place that the view "
                    f"{alias.name!r} (at {where(alias)}) shares and that is read afterwards; the "
                    "engine does not model aliasing: compute it out of place")
        for user in list(target.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(target, node)
    module.graph.eliminate_dead_code()
    module.recompile()


# --- op table -----------------------------------------------------------------------------------

def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"layer {node.target!r}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return getattr(node.target, "__name__", str(node.target))


def _argument(node: fx.Node, position: int, keyword: str, default: Any = None) -> Any:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(keyword, default)


def _static(node: fx.Node, value: Any, what: str) -> Any:
    """A literal argument (the engine does not follow a computed slope or dim)."""
    if isinstance(value, fx.Node) or (isinstance(value, list | tuple) and
                                      any(isinstance(v, fx.Node) for v in value)):
        raise UnsupportedLayerError(f"{_describe(node)} at {where(node)}: its {what} is computed "
                                    "in forward; the engine reads literal values only")
    return value


def _dims(value: Any) -> list[int] | None:
    if value is None:
        return None
    return [value] if isinstance(value, int) else list(value)


_RELU = {F.relu, torch.relu, "relu"}
_LEAKY = {F.leaky_relu, "leaky_relu"}
_SMOOTH = {torch.tanh: "tanh", F.tanh: "tanh", "tanh": "tanh", torch.sigmoid: "sigmoid",
           F.sigmoid: "sigmoid", "sigmoid": "sigmoid", F.silu: "silu", F.gelu: "gelu",
           F.elu: "elu", F.softplus: "softplus"}
_RESHAPES = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous", "view_as",
             "reshape_as", "unflatten", torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_PERMUTES = {"permute", "transpose", "t", "swapaxes", "swapdims", "movedim", torch.permute,
             torch.transpose, torch.movedim, torch.swapaxes}
_REDUCTIONS = {"sum": False, "mean": True, torch.sum: False, torch.mean: True}
_ADDS = {operator.add: 1.0, operator.sub: -1.0, torch.add: 1.0, torch.sub: -1.0, "add": 1.0,
         "sub": -1.0}
_PRODUCTS = {operator.mul: "mul", torch.mul: "mul", "mul": "mul"}
_SIZE_METHODS = {"size", "dim", "ndimension"}
_PIECES = {"chunk", "split", "tensor_split", torch.chunk, torch.split, torch.tensor_split}
_AVG = ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"]
_MAX = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
# Functional pools as the modules they equal (the module's rule then applies).
_FUNCTIONAL_POOLS = {
    F.avg_pool1d: (nn.AvgPool1d, _AVG[:5]), F.avg_pool2d: (nn.AvgPool2d, _AVG),
    F.avg_pool3d: (nn.AvgPool3d, _AVG), F.max_pool1d: (nn.MaxPool1d, _MAX),
    F.max_pool2d: (nn.MaxPool2d, _MAX), F.max_pool3d: (nn.MaxPool3d, _MAX),
    F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d, ["output_size"]),
    F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ["output_size"]),
    F.adaptive_avg_pool3d: (nn.AdaptiveAvgPool3d, ["output_size"]),
}
# Functional dropouts as the modules they equal (which then draw the mask, as they would).
_FUNCTIONAL_DROPOUTS = {F.dropout: nn.Dropout, F.dropout1d: nn.Dropout1d,
                        F.dropout2d: nn.Dropout2d, F.dropout3d: nn.Dropout3d}
_PAD_MODES = ("constant", "reflect", "replicate", "circular")
_SIZE_ATTRIBUTES = {"shape", "ndim", "dtype", "device"}  # metadata, not values


def _activation(node: fx.Node, key: Any) -> Rule | None:
    if key in _RELU:
        return act.LeakyRule(0.0)
    if key in _LEAKY:
        return act.LeakyRule(float(_static(node, _argument(node, 1, "negative_slope", 0.01),
                                           "slope")))
    kind = _SMOOTH.get(key)
    if kind is None:
        return None
    if kind in ("tanh", "sigmoid", "silu"):
        module = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU}[kind]()
    elif kind == "gelu":
        module = nn.GELU(approximate=_static(node, node.kwargs.get("approximate", "none"),
                                             "approximation"))
    elif kind == "elu":
        module = nn.ELU(float(_static(node, _argument(node, 1, "alpha", 1.0), "alpha")))
    else:
        module = nn.Softplus(float(_static(node, _argument(node, 1, "beta", 1.0), "beta")),
                             float(_static(node, _argument(node, 2, "threshold", 20.0),
                                           "threshold")))
    return act.SmoothRule(module, act.smooth_derivatives(module))


def _permutation(node: fx.Node, key: Any) -> Callable[[int], list[int]]:
    rest = [_static(node, a, "dims") for a in node.args[1:]]
    if key in ("permute", torch.permute):
        dims = list(rest[0]) if len(rest) == 1 and not isinstance(rest[0], int) else rest
        dims = dims or list(node.kwargs.get("dims", []))
        return lambda ndim: [d % ndim for d in dims]
    if key == "t":
        return lambda ndim: [1, 0] if ndim == 2 else list(range(ndim))
    if key in ("movedim", torch.movedim):
        source, destination = rest[0], rest[1]
        return lambda ndim: _movedim_order(ndim, source, destination)
    first, second = (rest + [node.kwargs.get("dim0"), node.kwargs.get("dim1")])[:2]

    def swapped(ndim: int) -> list[int]:
        order = list(range(ndim))
        a, b = first % ndim, second % ndim
        order[a], order[b] = order[b], order[a]
        return order
    return swapped


def _movedim_order(ndim: int, source, destination) -> list[int]:
    sources = [source] if isinstance(source, int) else list(source)
    destinations = [destination] if isinstance(destination, int) else list(destination)
    sources = [s % ndim for s in sources]
    destinations = [d % ndim for d in destinations]
    order = [None] * ndim
    for s, d in zip(sources, destinations, strict=True):
        order[d] = s
    rest = iter(d for d in range(ndim) if d not in sources)
    return [next(rest) if o is None else o for o in order]


@dataclass
class Call:
    """One op with its arguments evaluated on this pass's values (rules may read them);
    ``receiver`` is the tensor a method is called on."""

    function: Callable[..., Any]
    args: tuple
    kwargs: dict
    receiver: Any = None

    def __call__(self) -> Any:
        return self.function(*self.args, **self.kwargs)

    def operands(self) -> list[Any]:
        """The two operands of a binary op (``a * b``, ``a.mul(b)``, ``torch.mul(a, other=b)``)."""
        found = ([self.receiver] if self.receiver is not None else []) + list(self.args)
        if "other" in self.kwargs:
            found.append(self.kwargs["other"])
        return found


def _attribute(root: nn.Module, target: str) -> Any:
    value = root
    for name in target.split("."):
        value = getattr(value, name)
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Reader:
    """Turns a functionalized fx graph into :class:`Node` s over rules."""

    def __init__(self, module: fx.GraphModule, parameters: list[nn.Parameter],
                 inputs: int = 1) -> None:
        self.module = module
        self.inputs = inputs
        self.index = ParameterPositions(parameters)
        self.nodes: list[Node] = []
        self.value_of: dict[fx.Node, int] = {}  # fx node -> value index (0 = x)
        # "tensor" (on the input's path) | "meta" (constants of the passes) | "factor" (off the
        # path, depends on parameters) | "pieces" (a chunk/split of a tensor on the path)
        self.kind: dict[fx.Node, str] = {}
        self.skip: set[fx.Node] = set()  # activations fused into the layer before them
        self.pieces: dict[fx.Node, tuple[fx.Node, int]] = {}  # chunk/split: (source, dim)

    def read(self) -> GraphRule:
        output = None
        placeholders = [node for node in self.module.graph.nodes if node.op == "placeholder"]
        for position, node in enumerate(placeholders):
            # x, then up to inputs−1 conditions: constants of each pass (Python values of
            # shape queries and conditions are both "meta": computed in the forward only).
            self.kind[node] = "tensor" if position == 0 else "meta"
            if position < self.inputs:
                self.value_of[node] = position
            elif node.users:
                raise UnsupportedLayerError(
                    f"the critic's forward takes a second input {node.target!r}: FusedCritic "
                    "steps critics of one input; for conditional critics use "
                    "fastgp.gradient_penalty(critic, real, fake, cond=...)")
        for node in self.module.graph.nodes:
            if node in self.skip or node.op == "placeholder":
                continue
            elif node.op == "get_attr":
                # A parameter or buffer read outside a layer: a value off the input's path
                # whose gradient (if any) autograd gives (see _read_off_path).
                self._add(node, None, [], node.target, meta=True, differentiable=True)
                self.kind[node] = "factor"
            elif node.op == "output":
                output = node.args[0]
            else:
                self._read_call(node)
        if not isinstance(output, fx.Node) or self.kind.get(output) != "tensor":
            raise UnsupportedLayerError(
                "the critic must return one tensor computed from its input, got "
                f"{type(output).__name__ if not isinstance(output, fx.Node) else output.name}")
        return GraphRule(self.nodes, self.value_of[output], self.inputs, self.index)

    def _kind_of_inputs(self, node: fx.Node) -> set[str]:
        kinds = set()
        fx.node.map_arg((node.args, node.kwargs), lambda n: kinds.add(self.kind[n]) or n)
        return kinds

    def _tensor_inputs(self, node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs),
                        lambda n: found.append(n) or n if self.kind[n] == "tensor" else n)
        return found

    def _call(self, node: fx.Node, target: Any) -> Callable[[list[Any]], Callable[[], Any]]:
        """``values -> (() -> result)`` of the node's op with its arguments from ``values``."""
        value_of, module = self.value_of, self.module
        args, kwargs = node.args, dict(node.kwargs)
        if node.op == "call_function" and node.target in _FUNCTIONS_WITH_INPLACE_FLAG:
            position = _FUNCTIONS_WITH_INPLACE_FLAG[node.target]
            kwargs.pop("inplace", None)
            args = args[:position]

        def bind(values: list[Any]) -> Call:
            def resolve(n: fx.Node):
                return values[value_of[n]]
            real_args = fx.node.map_arg(args, resolve)
            real_kwargs = fx.node.map_arg(kwargs, resolve)
            if node.op == "call_method":
                return Call(getattr(real_args[0], target), real_args[1:], real_kwargs,
                            real_args[0])
            if node.op == "get_attr":
                return Call(_attribute, (module, node.target), {})
            if node.op == "call_module":
                return Call(module.get_submodule(node.target), real_args, real_kwargs)
            return Call(target, real_args, real_kwargs)
        return bind

    def _reads(self, node: fx.Node) -> list[int]:
        reads: list[int] = []
        fx.node.map_arg((node.args, node.kwargs),
                        lambda n: reads.append(self.value_of[n]) or n
                        if n in self.value_of else n)
        return reads

    def _add(self, node: fx.Node, rule: NodeRule | None, inputs: list[fx.Node], target: Any,
             meta: bool = False, differentiable: bool = False) -> None:
        indices = [self.value_of[n] for n in inputs]
        reads = sorted(set(self._reads(node)) | set(indices))  # a piece reads its source too
        self.nodes.append(Node(node.name, rule, indices, reads, self._call(node, target), meta,
                               differentiable, _describe(node), where(node)))
        self.value_of[node] = len(self.nodes) + self.inputs - 1
        self.kind[node] = "meta" if meta else "tensor"

    def _read_call(self, node: fx.Node) -> None:
        kinds = self._kind_of_inputs(node)
        key = node.target
        out_of_place = _INPLACE_FUNCTIONS.get(key, key) if node.op == "call_function" else key
        if node.op == "call_method" and key.endswith("_") and not key.startswith("_"):
            out_of_place = key[:-1]
        # The engine may run channels-last batches, where a view of the flat sample can need a
        # copy: reshape gives the same values either way.
        out_of_place = {"view": "reshape", "view_as": "reshape_as"}.get(out_of_place, out_of_place)
        if key is operator.getitem and isinstance(node.args[0], fx.Node) \
                and self.kind[node.args[0]] == "pieces":
            source, dim = self.pieces[node.args[0]]
            position = _static(node, node.args[1], "piece")
            if not isinstance(position, int):
                raise UnsupportedLayerError(f"{_describe(node)} at {where(node)}: pieces are read "
                                            "one at a time by integer position")
            self._add(node, Piece(f"{_describe(node)} at {where(node)}", dim, position), [source],
                      out_of_place)
            return
        if "pieces" in kinds:
            raise UnsupportedLayerError(
                f"{_describe(node)} at {where(node)} uses the pieces of a chunk/split other than "
                "one at a time by integer position (a, b = x.chunk(2, 1))")
        if "tensor" not in kinds:
            self._read_off_path(node, kinds, out_of_place)
            return
        if self._is_size_query(node):
            self._add(node, None, [], out_of_place, meta=True)
            return
        if key in _PIECES and "factor" not in kinds:
            # A tuple of views; each piece taken from it is read as a narrow of the source.
            dim = int(_static(node, _argument(node, 2, "dim", 0), "dim"))
            self._add(node, None, [], out_of_place, meta=True)
            self.kind[node] = "pieces"
            self.pieces[node] = (self._tensor_inputs(node)[0], dim)
            return
        if "factor" in kinds and not (node.op != "call_module" and (
                out_of_place in _ADDS or out_of_place in _PRODUCTS
                or out_of_place in FUNCTIONAL_AFFINE
                or out_of_place in (torch.cat, torch.concat, torch.concatenate))):
            raise UnsupportedLayerError(
                f"{_describe(node)} at {where(node)} combines the input with a parameter or "
                "buffer outside a layer; the engine reads parameters only inside the layers it "
                "has rules for, or in products and sums with the input's path (x * gain, "
                "x + bias, (embed(y) * h).sum(1), cat([h, embed(y)]))")
        inputs = self._tensor_inputs(node)
        if node.op == "call_module":
            self._read_layer(node, inputs)
            return
        rule = self._function_rule(node, out_of_place, inputs)
        self._add(node, rule, inputs, out_of_place)

    def _read_off_path(self, node: fx.Node, kinds: set[str], target: Any) -> None:
        """A value that does not depend on x: shapes, conditions and constants made from them
        (one-hot label maps) are constants of the passes; values that depend on parameters
        (a layer applied to labels, as the embedding of a projection critic, or a parameter
        read outside a layer) are computed with autograd recording, and the passes send them
        cotangents that one first-order autograd call pulls back to the parameters."""
        differentiable = "factor" in kinds or (
            node.op == "call_module"
            and any(True for _ in self.module.get_submodule(node.target).parameters()))
        self._add(node, None, [], target, meta=True, differentiable=differentiable)
        if differentiable:
            self.kind[node] = "factor"

    @staticmethod
    def _is_size_query(node: fx.Node) -> bool:
        return ((node.op == "call_method" and node.target in _SIZE_METHODS)
                or (node.op == "call_function" and node.target is builtins.getattr
                    and node.args[1] in _SIZE_ATTRIBUTES))

    def _read_layer(self, node: fx.Node, inputs: list[fx.Node]) -> None:
        module = self.module.get_submodule(node.target)
        if len(inputs) != 1 or len(node.args) != 1 or node.kwargs:
            raise UnsupportedLayerError(f"{_describe(node)} at {where(node)} is called with "
                                        "other arguments than one tensor")
        linear = self._flattened_into_linear(node, module)
        if linear is not None:
            # Flatten + Linear: one rule that meets a channels-last activation without a copy.
            self.skip.add(linear)
            slope, activation = self._fusable_activation(linear)
            rule = FlattenLinearRule(self.module.get_submodule(linear.target),
                                     *self._layer_parameters(linear), slope)
            self._add(node, LayerNode(rule), inputs, node.target)
            self._alias(linear, node)
        else:
            slope, activation = (self._fusable_activation(node) if isinstance(module, _FUSABLE)
                                 else (None, None))
            self._add(node, LayerNode(layer_rule(module, node.target, self.index, slope)),
                      inputs, node.target)
        if activation is not None:
            self.skip.add(activation)
            self._alias(activation, node)

    def _alias(self, node: fx.Node, producer: fx.Node) -> None:
        """``node``'s value is ``producer``'s (an op fused into it)."""
        self.value_of[node], self.kind[node] = self.value_of[producer], "tensor"

    def _layer_parameters(self, node: fx.Node) -> tuple[int | None, int | None]:
        module = self.module.get_submodule(node.target)
        index = parameter_index(self.index, module, node.target)
        return weight_slot(self.index, module, node.target), index(module.bias)

    def _flattened_into_linear(self, node: fx.Node, module: nn.Module) -> fx.Node | None:
        """The ``nn.Linear`` that alone reads this full ``nn.Flatten``, if so."""
        if not (type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1
                and len(node.users) == 1):
            return None
        (user,) = node.users
        if (user.op == "call_module" and user.args == (node,) and not user.kwargs
                and type(self.module.get_submodule(user.target)) is nn.Linear):
            return user
        return None

    def _fusable_activation(self, node: fx.Node) -> tuple[float | None, fx.Node | None]:
        """The slope and node of a (Leaky)ReLU that alone reads ``node``, to fuse into it."""
        if len(node.users) != 1:
            return None, None
        (user,) = node.users
        slope = self._fused_slope(user, node)
        return (slope, user) if slope is not None else (None, None)

    def _fused_slope(self, user: fx.Node, producer: fx.Node) -> float | None:
        """The slope of a (Leaky)ReLU that only reads ``producer``, to fuse it into the layer."""
        if not user.args or user.args[0] is not producer:
            return None
        if user.op == "call_module":
            module = self.module.get_submodule(user.target)
            if len(user.args) == 1 and not user.kwargs and type(module) in (nn.ReLU, nn.LeakyReLU):
                return leaky_slope(module)
            return None
        key = user.target
        if user.op == "call_function":
            key = {F.relu_: F.relu, torch.relu_: torch.relu, F.leaky_relu_: F.leaky_relu}.get(
                key, key)
        elif user.op == "call_method" and key in ("relu_", "leaky_relu_"):
            key = key[:-1]
        rule = _activation(user, key) if key in _RELU | _LEAKY else None
        return None if rule is None else rule.negative_slope

    def _function_rule(self, node: fx.Node, key: Any, inputs: list[fx.Node]) -> NodeRule:
        name = f"{_describe(node)} at {where(node)}"
        activation = _activation(node, key)
        if activation is not None and len(inputs) == 1:
            return LayerNode(activation)
        if key is operator.getitem and len(inputs) == 1:
            return Select(name)
        if key in _RESHAPES and len(inputs) == 1:
            return Reshape(name)
        if key in _PERMUTES and len(inputs) == 1:
            return Permute(name, _permutation(node, key))
        if key in _REDUCTIONS and len(inputs) == 1:
            dims = _dims(_static(node, _argument(node, 1, "dim"), "dims"))
            keepdim = bool(_static(node, _argument(node, 2, "keepdim", False), "keepdim"))
            return Reduce(name, dims, keepdim, _REDUCTIONS[key])
        pool = _FUNCTIONAL_POOLS.get(key)
        if pool is not None and len(inputs) == 1:
            module_class, names = pool
            options = {names[position - 1]: _static(node, value, names[position - 1])
                       for position, value in enumerate(node.args) if position > 0}
            options |= {k: _static(node, v, k) for k, v in node.kwargs.items()}
            return LayerNode(layer_rule(module_class(**options), name, self.index, None))
        if key in _FUNCTIONAL_DROPOUTS and len(inputs) == 1:
            return LayerNode(layer_rule(self._dropout_module(node, key), name, self.index, None))
        if key is F.pad and len(inputs) == 1:
            pad = _static(node, _argument(node, 1, "pad"), "padding")
            mode = _static(node, _argument(node, 2, "mode", "constant"), "mode")
            value = _static(node, _argument(node, 3, "value", None), "value")
            if mode not in _PAD_MODES:
                raise UnsupportedLayerError(f"{name}: {mode} padding has no rule (zeros, "
                                            "constants, reflect, replicate and circular do)")
            return LayerNode(PadRule(list(pad), mode, 0.0 if value is None else float(value)))
        if key in FUNCTIONAL_AFFINE and len(inputs) == 1 and inputs[0] is _argument(
                node, 0, "input"):
            dims = FUNCTIONAL_AFFINE[key]
            options = {option: _static(node, _argument(node, position, option, default), option)
                       for position, (option, default) in enumerate(CONV_OPTIONS.items(),
                                                                    start=3)} if dims else {}
            return FunctionalAffine(name, dims, options)
        if key in (torch.cat, torch.concat, torch.concatenate):
            parts = _argument(node, 0, "tensors")
            on_path = [isinstance(part, fx.Node) and self.kind[part] == "tensor" for part in parts]
            return Concatenate(name, int(_static(node, _argument(node, 1, "dim", 0), "dim")),
                               on_path)
        if key in _ADDS:
            return self._sum_rule(node, key, inputs, name)
        if key in (operator.mul, torch.mul, "mul", operator.truediv, torch.div, "div",
                   operator.neg, torch.neg, "neg"):
            return self._scale_rule(node, key, inputs, name)
        raise UnsupportedLayerError(
            f"no rule for {name}. The engine reads layers (Linear, ConvNd, activations, "
            "LayerNorm, GroupNorm, pools, dropout, padding, Flatten) and, between them, "
            "view/reshape/flatten/(un)squeeze/permute/transpose, sum/mean over non-batch dims, "
            "cat, x ± y, scaling by constants; fastgp.gradient_penalty works with any critic")

    @staticmethod
    def _dropout_module(node: fx.Node, key: Any) -> nn.Module:
        """The dropout module that an ``F.dropout*(x, p, training, inplace)`` call equals (in
        place or not matters on CUDA, where the two draw their masks differently)."""
        p = float(_static(node, _argument(node, 1, "p", 0.5), "probability"))
        training = bool(_static(node, _argument(node, 2, "training", True), "training flag"))
        inplace = bool(_static(node, _argument(node, 3, "inplace", False), "inplace flag"))
        return _FUNCTIONAL_DROPOUTS[key](p, inplace).train(training)

    def _sum_rule(self, node, key, inputs, name) -> NodeRule:
        sign = _ADDS[key]
        operands = list(node.args[:2])
        if len(operands) < 2:
            operands.append(node.kwargs.get("other"))
        alpha = node.kwargs.get("alpha", 1)
        if not _number(_static(node, alpha, "alpha")):
            raise UnsupportedLayerError(f"{name}: alpha must be a number")
        tensors = [isinstance(op, fx.Node) and self.kind[op] == "tensor" for op in operands]
        if all(tensors):
            if operands[0] is operands[1]:
                return Scale(name, 1.0 + sign * alpha)  # x + x
            return Sum(name, [1.0, sign * alpha])
        position = 1 if tensors[0] else 0
        constant = operands[position]
        constant_kind = self.kind[constant] if isinstance(constant, fx.Node) else None
        if not _number(constant) and constant_kind not in ("meta", "factor"):
            raise UnsupportedLayerError(f"{name} adds a {type(constant).__name__}: the engine "
                                        "adds tensors of the input's path, conditions or numbers")
        # x ± c: slope 1; c − x: slope −1.
        slope = 1.0 if tensors[0] else sign * alpha
        if constant_kind == "factor":
            return Shift(name, slope, position, sign * alpha if tensors[0] else 1.0)
        return Scale(name, slope)

    def _scale_rule(self, node, key, inputs, name) -> NodeRule:
        if key in (operator.neg, torch.neg, "neg"):
            return Scale(name, -1.0)
        operands = list(node.args[:2])
        if len(operands) < 2:
            operands.append(node.kwargs.get("other"))
        tensors = [isinstance(op, fx.Node) and self.kind[op] == "tensor" for op in operands]
        if all(tensors):
            raise UnsupportedLayerError(f"{name} multiplies two tensors of the input's path: a "
                                        "bilinear op the engine has no rule for")
        position = 1 if tensors[0] else 0
        constant = operands[position]
        if isinstance(constant, fx.Node) and key in _PRODUCTS:
            return Multiply(name, position)  # by a condition, an embedding, a learned gain
        if not _number(constant):
            raise UnsupportedLayerError(f"{name} scales by a {type(constant).__name__}: the "
                                        "engine multiplies by numbers and values off the "
                                        "input's path, and divides by numbers only")
        if key in (operator.truediv, torch.div, "div"):
            if not tensors[0]:
                raise UnsupportedLayerError(f"{name} divides by the input (not linear)")
            if node.kwargs.get("rounding_mode") is not None:
                raise UnsupportedLayerError(f"{name} rounds: not linear")
            return Scale(name, 1.0 / constant)
        return Scale(name, float(constant))


def read_critic(critic: nn.Module, parameters: list[nn.Parameter], inputs: int = 1) -> GraphRule:
    """The engine's view of ``critic``: its traced ``forward`` as a graph of rules referring to
    ``parameters`` by position; ``inputs`` counts x and the conditions after it. Raises
    :class:`UnsupportedLayerError` naming what it cannot read, and where."""
    module = trace(critic)
    functionalize(module)
    return _Reader(module, parameters, inputs).read()




def read_as_far_as_possible(critic: nn.Module, parameters: list[nn.Parameter], inputs: int = 1
                            ) -> tuple[list[Node], GraphRule | None, str | None]:
    """``(nodes read, graph, None)``, or ``(nodes read before the blocker, None, reason)``:
    what :func:`fastgp.explain` shows."""
    reader = None
    try:
        module = trace(critic)
        functionalize(module)
        reader = _Reader(module, parameters, inputs)
        graph = reader.read()
    except UnsupportedLayerError as error:
        return (reader.nodes if reader is not None else []), None, str(error)
    return reader.nodes, graph, None
