"""One case per fastgp op: how to call it on tensors of any layout, and its formula written
independently of the composite, in plain PyTorch. ``tests/test_op_contract.py`` runs every case
on every backend and layout; adding an op means adding its case here (a test fails otherwise).

Layouts: every tensor input that follows the batch (``OpCase.inputs``) is built in the layout
under test; the op's other arguments (per-sample vectors, the bias, scalars) come from
``OpCase.arguments``. All tensors are fp64 so that values compare at ``FP64_TOL``.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# name -> (shape of a fresh contiguous tensor, view of it with the layout under test)
PAIRABLE = {  # all of shape (2, 3, 4, 5): the two inputs of interpolate / mask backward mix
    "contiguous": ((2, 3, 4, 5), lambda t: t),
    "channels_last": ((2, 3, 4, 5), lambda t: t.to(memory_format=torch.channels_last)),
    "permuted": ((2, 5, 4, 3), lambda t: t.permute(0, 3, 2, 1)),  # dense, not sample-major
    "sliced": ((2, 3, 4, 10), lambda t: t[..., ::2]),  # not dense
    "expanded": ((2, 3, 1, 5), lambda t: t.expand(2, 3, 4, 5)),  # overlapping (stride 0)
}
SINGLE = {  # other ranks and size-1 dimensions
    "transposed 3-D": ((3, 6, 4), lambda t: t.transpose(1, 2)),
    "channels_last_3d": ((2, 3, 2, 3, 2), lambda t: t.to(memory_format=torch.channels_last_3d)),
    # contiguous by PyTorch's rule, which ignores the strides of size-1 dimensions
    "size-1 dims, odd strides": ((2, 3, 1, 1), lambda t: t.as_strided((2, 3, 1, 1), (3, 1, 7, 5))),
    "batch of one, sliced": ((1, 3, 8), lambda t: t[:, :, ::2]),
}
LAYOUTS = PAIRABLE | SINGLE
# every pair of pairable layouts, and each other layout with itself
PAIRS = list(itertools.product(PAIRABLE, repeat=2)) + [(name, name) for name in SINGLE]
MIXED = [("channels_last", "contiguous"), ("contiguous", "channels_last"),
         ("permuted", "channels_last"), ("sliced", "expanded")]


def tensor(layout: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A random tensor in ``layout`` (a bool one for masks)."""
    shape, view = LAYOUTS[layout]
    base = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return view(base > 0 if dtype == torch.bool else base.to(dtype))


def per_sample(like: torch.Tensor, seed: int = 9) -> torch.Tensor:
    """A vector of one value in [0, 1) per sample of ``like`` (ε, norm gradients)."""
    return torch.rand(like.shape[0], generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)


def _samples(x: torch.Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(x.shape[0], -1).norm(dim=1)


def plain_penalty(grad, weight, center, one_sided):
    """The penalty written plainly: reshape, norm, mean (no subgradient at zero norms)."""
    norms = grad.reshape(grad.shape[0], -1).norm(dim=1)
    deviation = norms - center
    if one_sided:
        deviation = deviation.clamp(min=0)
    return weight * (deviation**2).mean(), norms


def _penalty_backward_formula(grad, norms, grad_penalty, grad_norms, weight, center, one_sided):
    # ∂(p̄·P + Σ n̄_i·n_i)/∂g by autograd through the plain penalty (nonzero norms here)
    leaf = grad.detach().clone().requires_grad_(True)
    penalty, plain_norms = plain_penalty(leaf, weight, center, one_sided)
    (expected,) = torch.autograd.grad(grad_penalty * penalty + (grad_norms * plain_norms).sum(),
                                      leaf)
    return expected


def _bias_leaky_relu_formula(x, bias, slope, channel_dim):
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    y = x + bias.view(shape)
    return F.leaky_relu(y, slope), y > 0


@dataclass(frozen=True)
class OpCase:
    """``name``: the op (a field of :class:`fastgp.ops.Kernels`); ``inputs``: its tensor
    arguments that follow the batch layout, ``"mask"`` a bool one; ``arguments(*inputs)``: the
    op's whole argument tuple; ``formula(*arguments)``: the expected outputs; ``differentiable``:
    whether the op has an autograd formula (gradcheck, gradgradcheck, opcheck with gradients)."""

    name: str
    inputs: tuple[str, ...]
    arguments: Callable
    formula: Callable
    differentiable: bool = True

    def call(self, layouts: tuple[str, ...], requires_grad: bool = False) -> tuple:
        """The op's arguments with its inputs in ``layouts`` (one per input)."""
        built = []
        for index, (name, layout) in enumerate(zip(self.inputs, layouts, strict=True)):
            dtype = torch.bool if name == "mask" else torch.float64
            value = tensor(layout, seed=index + 1, dtype=dtype)
            if requires_grad and dtype != torch.bool and index == 0:
                value = value.detach().requires_grad_(True)
            built.append(value)
        return self.arguments(*built)

    def layout_choices(self, every_pair: bool = True) -> list[tuple[str, ...]]:
        """The layouts the cases run in: for ops of two inputs every pair (or the mixed ones and
        each layout with itself), for one input every layout."""
        if len(self.inputs) == 1:
            return [(name,) for name in LAYOUTS]
        return PAIRS if every_pair else [*MIXED, *((name, name) for name in LAYOUTS)]


CASES = [
    OpCase("interpolate", ("real", "fake"),
           lambda real, fake: (real, fake, per_sample(real)),
           lambda real, fake, eps: (eps.view(_samples(real)) * real
                                    + (1 - eps.view(_samples(real))) * fake,)),
    OpCase("interpolate_backward", ("grad",),
           lambda grad: (grad, per_sample(grad)),
           lambda grad, eps: (eps.view(_samples(grad)) * grad,
                              (1 - eps.view(_samples(grad))) * grad)),
    OpCase("norm_penalty", ("grad",),
           lambda grad: (grad, 10.0, 1.0, False),
           plain_penalty),
    OpCase("norm_penalty_backward", ("grad",),
           lambda grad: (grad, _norms(grad), torch.tensor(1.0, dtype=torch.float64),
                         per_sample(grad), 10.0, 1.0, False),
           lambda *arguments: (_penalty_backward_formula(*arguments),),
           differentiable=False),
    OpCase("bias_leaky_relu", ("x",),
           lambda x: (x, torch.linspace(-1, 1, x.shape[1], dtype=torch.float64), 0.2, 1),
           _bias_leaky_relu_formula),
    OpCase("leaky_relu_mask_backward", ("grad", "mask"),
           lambda grad, mask: (grad, mask, 0.2),
           lambda grad, mask, slope: (torch.where(mask, grad, slope * grad),)),
]


def small_differentiable_call(case: OpCase) -> tuple:
    """Arguments for gradcheck: a small contiguous batch whose floating tensors require grad,
    kept away from LeakyReLU's kink (finite differences break there)."""
    base = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    inputs = [base > 0 if name == "mask" else base + index for index, name in enumerate(case.inputs)]
    arguments = list(case.arguments(*inputs))
    if case.name == "bias_leaky_relu":
        x, bias = arguments[0], arguments[1]
        arguments[0] = x + 0.05 * torch.sign(x + bias.view(1, -1, 1))
    return tuple(a.detach().clone().requires_grad_(True)
                 if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in arguments)
