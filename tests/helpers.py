"""Comparison helpers shared by the tests (pytest puts this folder on sys.path)."""

import torch

# fp64 tolerance of DESIGN.md §4 (fp32: 1e-5, bf16: 2e-2).
FP64_TOL = 1e-10
FP32_TOL = 1e-5


def relative_error(actual, expected) -> float:
    """``‖a − b‖ / ‖b‖`` over tensors or lists of tensors (compared in fp64); NaN never passes."""
    if isinstance(actual, torch.Tensor):
        actual, expected = [actual], [expected]
    a = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in actual])
    b = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in expected])
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    denominator = b.norm()
    difference = (a - b).norm()
    return float(difference / denominator) if denominator > 0 else float(difference)


def parameter_gradients(loss: torch.Tensor, module: torch.nn.Module) -> list[torch.Tensor]:
    """Gradients of ``loss`` for every parameter; zeros for parameters the loss does not use."""
    parameters = list(module.parameters())
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads, strict=True)]
