"""Rules of the tensor ops a critic's ``forward`` uses between its layers.

All of them are linear per sample (dimension 0 is the batch and is never mixed), so for
``y = L x`` the passes are ``adjoint a_x = Lᵀ a_y``, ``tangent t_y = L t_x`` and ``backward
g_x = Lᵀ g_y``, with no curvature and no parameters:

==================================  ====================================  =====================
op                                  L                                     Lᵀ
==================================  ====================================  =====================
view/reshape/flatten/(un)squeeze    reshape to the output's sample shape  reshape back
permute/transpose                   permute with ``p`` (``p[0] = 0``)     permute with ``p⁻¹``
sum/mean over dims ``D ∌ 0``        sum over ``D`` (× 1/|D| for mean)     broadcast back (× …)
``c·x``, ``x/c``, ``−x``            scale by ``c``                        scale by ``c``
``x + c``, ``x − c``                identity (the constant has no slope)  identity
``x ± y``                           ``t_x ± t_y``                         ``(g, ±g)``
``x ⊙ f`` (``f`` off the path)      ``f ⊙ t``                             ``Σ_bcast f ⊙ g``
``x ± f`` (``f`` off the path)      identity                              identity
``cat(xs, dim ≠ 0)``                concatenate                           split by sizes
``x[:, idx]`` (batch kept whole)    the same indexing                     zeros, indexed ← g
chunk/split piece ``k``             narrow along ``dim ≠ 0``              zeros, narrow ← g
==================================  ====================================  =====================

The forward runs the op as the critic's code wrote it; the other passes run ``L`` or ``Lᵀ`` on
as many rows as they carry, from the per-sample shapes recorded in the forward.

``f`` is a value off the input's path: a condition, a constant, or a function of parameters
(a label embedding ``E[y]``, a learned gain). When it depends on parameters, the ops that read it
also send it a cotangent ``f̄`` (see :mod:`fastgp.engine.graph`): ``x ⊙ f`` sends ``a ⊙ t_x`` from
the tangent pass (the penalty's share: ``f`` scales the input gradient) and ``g ⊙ x`` from the
backward; ``x ± f`` and a part ``f`` of a ``cat`` send ``±g`` (they move values only).
"""

from __future__ import annotations

import torch

from fastgp.engine.base import UnsupportedLayerError
from fastgp.engine.graph import NodeRule


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)


def _like_input(grad: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Transposed results keep the step's memory format (convolutions convert it otherwise)."""
    return grad.contiguous(memory_format=torch.channels_last) if channels_last else grad


def _zeros_like_input(g: torch.Tensor, saved: dict) -> torch.Tensor:
    """Zeros of the input's sample shape for ``g``'s rows, in the input's memory format (a
    transposed index writes into it; converting it afterwards would copy it again)."""
    layout = torch.channels_last if saved["channels_last"] else torch.contiguous_format
    return torch.empty((g.shape[0], *saved["in"]), dtype=g.dtype, device=g.device,
                       memory_format=layout).zero_()


class LinearOp(NodeRule):
    """A per-sample linear op of one input: subclasses give ``L`` (``apply``) and ``Lᵀ``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def record(self, x: torch.Tensor, out: torch.Tensor) -> dict:
        """What ``apply``/``transpose`` need, from the forward's input and output."""
        return {}

    def apply(self, saved: dict, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transpose(self, saved: dict, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, inputs, call, ctx):
        x = inputs[0]
        out = call()
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UnsupportedLayerError(
                f"{self.name} turns a batch of {x.shape[0]} samples {tuple(x.shape)} into "
                f"{shape}: it mixes or drops the batch dimension, so a per-sample gradient "
                "penalty is not defined through it")
        return out, {"in": x.shape[1:], "out": out.shape[1:],
                     "channels_last": _channels_last(x), **self.record(x, out)}

    def adjoint(self, saved, a_out, ctx):
        return [_like_input(self.transpose(saved, a_out), saved["channels_last"])]

    def tangent(self, saved, t_in, ctx):
        return self.apply(saved, t_in[0])

    def backward(self, saved, g_out, ctx, need_input):
        if not need_input[0]:
            return [None]
        return [_like_input(self.transpose(saved, g_out), saved["channels_last"])]


class Reshape(LinearOp):
    """view, reshape, flatten, squeeze, unsqueeze, contiguous, ``nn.Flatten``/``Unflatten``."""

    def apply(self, saved, t):
        return t.reshape(t.shape[0], *saved["out"])

    def transpose(self, saved, g):
        return g.reshape(g.shape[0], *saved["in"])


class Permute(LinearOp):
    """permute, transpose, swapaxes, movedim: ``order(ndim)`` gives the permutation."""

    def __init__(self, name: str, order) -> None:
        super().__init__(name)
        self.order = order

    def record(self, x, out):
        order = self.order(x.dim())
        if order[0] != 0:
            raise UnsupportedLayerError(f"{self.name} moves the batch dimension (order {order})")
        inverse = [0] * len(order)
        for position, dim in enumerate(order):
            inverse[dim] = position
        return {"order": order, "inverse": inverse}

    def apply(self, saved, t):
        return t.permute(saved["order"])

    def transpose(self, saved, g):
        return g.permute(saved["inverse"])


class Reduce(LinearOp):
    """sum/mean over ``dims`` (None: every dim but the batch) with ``keepdim``."""

    def __init__(self, name: str, dims, keepdim: bool, mean: bool) -> None:
        super().__init__(name)
        self.dims, self.keepdim, self.mean = dims, keepdim, mean

    def record(self, x, out):
        dims = sorted({d % x.dim() for d in self.dims}) if self.dims is not None else None
        if dims is None or 0 in dims:
            raise UnsupportedLayerError(f"{self.name} sums over the batch dimension: a per-sample "
                                        "gradient penalty is not defined through it")
        count = 1
        for d in dims:
            count *= x.shape[d]
        return {"dims": dims, "scale": 1.0 / count if self.mean else 1.0}

    def apply(self, saved, t):
        out = t.sum(dim=saved["dims"], keepdim=self.keepdim)
        return out * saved["scale"] if self.mean else out

    def transpose(self, saved, g):
        if not self.keepdim:
            for d in saved["dims"]:
                g = g.unsqueeze(d)
        g = g.expand(g.shape[0], *saved["in"])
        return g * saved["scale"] if self.mean else g.contiguous()


class Scale(LinearOp):
    """``c·x`` (``x/c`` is ``c = 1/c``, ``−x`` is ``c = −1``), plus a constant that has no slope."""

    def __init__(self, name: str, factor: float) -> None:
        super().__init__(name)
        self.factor = factor

    def record(self, x, out):
        if out.shape != x.shape:
            raise UnsupportedLayerError(
                f"{self.name} broadcasts the input from {tuple(x.shape)} to {tuple(out.shape)} "
                "(a constant of a larger shape): the engine scales and shifts in place of the "
                "input's shape only")
        return {}

    def apply(self, saved, t):
        return t if self.factor == 1.0 else t * self.factor

    transpose = apply


def _rows_of(factor: torch.Tensor, out: torch.Tensor, rows: slice | None) -> slice | None:
    """The rows of ``factor`` a pass over ``rows`` reads: ``rows`` when it has one row per
    sample of the forward's output ``out``, None when it is broadcast over the batch."""
    per_sample = factor.dim() == out.dim() and factor.shape[0] == out.shape[0] > 1
    return rows if per_sample else None


def _part(factor: torch.Tensor, rows: slice | None) -> torch.Tensor:
    return factor.detach() if rows is None else factor.detach()[rows]


class Multiply(NodeRule):
    """``x ⊙ f`` with ``f`` off the input's path (``operand``: its position among the op's
    operands), broadcasting either way except over the batch::

        forward  v = x ⊙ f      adjoint  a_x = Σ_bcast f ⊙ a_v      tangent  t_v = f ⊙ t_x
        backward g_x = Σ_bcast f ⊙ g_v
        f̄ += Σ_bcast a_v ⊙ t_x (tangent)  and  Σ_bcast g_v ⊙ x (backward), when f has parameters
    """

    def __init__(self, name: str, operand: int) -> None:
        self.name, self.operand = name, operand

    def forward(self, inputs, call, ctx):
        x, factor = inputs[0], call.operands()[self.operand]
        if not isinstance(factor, torch.Tensor):  # a number computed from shapes
            factor = torch.as_tensor(factor, dtype=x.dtype, device=x.device)
        out = call()
        if out.shape[0] != x.shape[0]:
            raise UnsupportedLayerError(f"{self.name} broadcasts the batch of {x.shape[0]} "
                                        f"samples to {out.shape[0]}")
        return out, {"factor": factor, "x": x if factor.requires_grad else None,
                     "in": x.shape[1:], "channels_last": _channels_last(x),
                     "penalty": _rows_of(factor, out, ctx.penalty_rows),
                     "backward": _rows_of(factor, out, ctx.backward_rows)}

    def _times_factor(self, saved, g, rows):
        product = g * _part(saved["factor"], rows)
        return _like_input(product.sum_to_size(g.shape[0], *saved["in"]),
                           saved["channels_last"])

    def _collect(self, saved, product, rows, ctx):
        factor = saved["factor"]
        shape = factor[rows].shape if rows is not None else factor.shape
        ctx.add_factor_cotangent(factor, product.sum_to_size(shape), rows)

    def adjoint(self, saved, a_out, ctx):
        if saved["factor"].requires_grad:
            saved["a"] = a_out
        return [self._times_factor(saved, a_out, saved["penalty"])]

    def tangent(self, saved, t_in, ctx):
        if saved["factor"].requires_grad:
            self._collect(saved, saved.pop("a") * t_in[0], saved["penalty"], ctx)
        return t_in[0] * _part(saved["factor"], saved["penalty"])

    def backward(self, saved, g_out, ctx, need_input):
        rows = saved["backward"]
        if saved["factor"].requires_grad:
            self._collect(saved, g_out * ctx.backward_part(saved["x"]), rows, ctx)
        return [self._times_factor(saved, g_out, rows) if need_input[0] else None]


class Shift(Scale):
    """``x ± f`` / ``f − x`` with ``f`` off the input's path: slope ``±1`` for ``x`` (``f`` does
    not broadcast it); ``f̄ += Σ_bcast sign·g`` in the backward when ``f`` has parameters."""

    def __init__(self, name: str, factor: float, operand: int, sign: float) -> None:
        super().__init__(name, factor)
        self.operand, self.sign = operand, sign

    def forward(self, inputs, call, ctx):
        out, saved = super().forward(inputs, call, ctx)
        shift = call.operands()[self.operand]
        if isinstance(shift, torch.Tensor) and shift.requires_grad:
            saved["shift"] = shift
            saved["rows"] = _rows_of(shift, out, ctx.backward_rows)
        return out, saved

    def backward(self, saved, g_out, ctx, need_input):
        shift = saved.get("shift")
        if shift is not None:
            rows = saved["rows"]
            shape = shift[rows].shape if rows is not None else shift.shape
            term = g_out if self.sign == 1.0 else g_out * self.sign
            ctx.add_factor_cotangent(shift, term.sum_to_size(shape), rows)
        return super().backward(saved, g_out, ctx, need_input)


class Sum(NodeRule):
    """``Σ_i s_i x_i`` of several inputs of one shape (``x + y``, ``x − y``, ``x += y``)."""

    def __init__(self, name: str, signs: list[float]) -> None:
        self.name, self.signs = name, signs

    def forward(self, inputs, call, ctx):
        out = call()
        if any(x.shape != out.shape for x in inputs):
            raise UnsupportedLayerError(
                f"{self.name} adds tensors of shapes {[tuple(x.shape) for x in inputs]}: the "
                "engine adds tensors of one shape only (no broadcasting)")
        return out, {"channels_last": [_channels_last(x) for x in inputs]}

    def _split(self, saved, g):
        return [_like_input(g if s == 1.0 else g * s, cl)
                for s, cl in zip(self.signs, saved["channels_last"], strict=True)]

    def adjoint(self, saved, a_out, ctx):
        return self._split(saved, a_out)

    def tangent(self, saved, t_in, ctx):
        total = None
        for s, t in zip(self.signs, t_in, strict=True):
            term = t if s == 1.0 else t * s
            total = term if total is None else total + term
        return total

    def backward(self, saved, g_out, ctx, need_input):
        return [g if need else None for g, need in zip(self._split(saved, g_out), need_input,
                                                        strict=True)]


class Concatenate(NodeRule):
    """``torch.cat(xs, dim)`` along a dimension other than the batch. Parts off the input's path
    (conditions, e.g. one-hot label maps) are constants: zero tangent, no cotangent."""

    def __init__(self, name: str, dim: int, on_path: list[bool]) -> None:
        self.name, self.dim, self.on_path = name, dim, on_path

    def forward(self, inputs, call, ctx):
        parts = call.args[0]
        out = call()
        dim = self.dim % out.dim()
        if dim == 0:
            raise UnsupportedLayerError(f"{self.name} concatenates along the batch dimension")
        # Parts off the path that depend on parameters (an embedding of labels) get f̄ = g's
        # piece in the backward.
        factors = {k: part for k, (part, on) in enumerate(zip(parts, self.on_path, strict=True))
                   if not on and isinstance(part, torch.Tensor) and part.requires_grad}
        return out, {"dim": dim, "sizes": [part.shape[dim] for part in parts],
                     "shapes": [part.shape[1:] for part in parts],
                     "channels_last": [_channels_last(x) for x in inputs],
                     "factors": factors,
                     "rows": {k: _rows_of(f, out, ctx.backward_rows)
                              for k, f in factors.items()}}

    def _split(self, saved, g, ctx=None):
        pieces = torch.split(g, saved["sizes"], dim=saved["dim"])
        if ctx is not None:
            for k, factor in saved["factors"].items():
                rows = saved["rows"][k]
                shape = factor[rows].shape if rows is not None else factor.shape
                ctx.add_factor_cotangent(factor, pieces[k].sum_to_size(shape), rows)
        on_path = [piece for piece, on in zip(pieces, self.on_path, strict=True) if on]
        return [_like_input(piece, cl)
                for piece, cl in zip(on_path, saved["channels_last"], strict=True)]

    def adjoint(self, saved, a_out, ctx):
        return self._split(saved, a_out)

    def tangent(self, saved, t_in, ctx):
        tangents = iter(t_in)
        rows = t_in[0].shape[0]
        parts = [next(tangents) if on else t_in[0].new_zeros(rows, *shape)
                 for on, shape in zip(self.on_path, saved["shapes"], strict=True)]
        return torch.cat(parts, dim=saved["dim"])

    def backward(self, saved, g_out, ctx, need_input):
        return [g if need else None for g, need in zip(self._split(saved, g_out, ctx),
                                                        need_input, strict=True)]


def _keeps_the_batch(index: object, ndim: int) -> bool:
    """``x[index]`` takes every sample, in order, as its first dimension: basic indexing whose
    first entry is ``:`` (or an ``...`` that covers the batch dimension)."""
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, torch.Tensor | list | bool) for i in items) or not items:
        return False
    first = items[0]
    if first == slice(None):
        return True
    if first is Ellipsis:
        consumed = sum(1 for i in items[1:] if isinstance(i, int | slice))
        return consumed < ndim
    return False


class Select(NodeRule):
    """Basic indexing along non-batch dims (``x[:, :k]``, ``x[..., 0]``, ``x[:, None]``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def forward(self, inputs, call, ctx):
        x, index = inputs[0], call.args[1]
        if not _keeps_the_batch(index, x.dim()):
            raise UnsupportedLayerError(
                f"{self.name} indexes with {index!r}: the engine reads basic indexing that keeps "
                "every sample (the first index ':' or '...'), not advanced or batch indexing")
        return call(), {"index": index, "in": x.shape[1:], "channels_last": _channels_last(x)}

    def _transpose(self, saved, g):
        out = _zeros_like_input(g, saved)
        out[saved["index"]] = g
        return [out]

    def adjoint(self, saved, a_out, ctx):
        return self._transpose(saved, a_out)

    def tangent(self, saved, t_in, ctx):
        return t_in[0][saved["index"]]

    def backward(self, saved, g_out, ctx, need_input):
        return self._transpose(saved, g_out) if need_input[0] else [None]


class Piece(NodeRule):
    """Piece ``k`` of ``chunk``/``split``/``tensor_split`` along ``dim ≠ 0``: a narrow."""

    def __init__(self, name: str, dim: int, position: int) -> None:
        self.name, self.dim, self.position = name, dim, position

    def forward(self, inputs, call, ctx):
        x, pieces = inputs[0], call.args[0]
        dim = self.dim % x.dim()
        if dim == 0:
            raise UnsupportedLayerError(f"{self.name} splits the batch dimension")
        offset = sum(piece.shape[dim] for piece in pieces[:self.position])
        out = call()
        return out, {"dim": dim, "offset": offset, "size": out.shape[dim], "in": x.shape[1:],
                     "channels_last": _channels_last(x)}

    def _transpose(self, saved, g):
        out = _zeros_like_input(g, saved)
        out.narrow(saved["dim"], saved["offset"], saved["size"]).copy_(g)
        return [out]

    def adjoint(self, saved, a_out, ctx):
        return self._transpose(saved, a_out)

    def tangent(self, saved, t_in, ctx):
        return t_in[0].narrow(saved["dim"], saved["offset"], saved["size"])

    def backward(self, saved, g_out, ctx, need_input):
        return self._transpose(saved, g_out) if need_input[0] else [None]
