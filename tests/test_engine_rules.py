"""Each engine rule on its own against autograd in fp64: forward, adjoint, tangent (with the
penalty's parameter gradients and the curvature term) and backward (with its parameter gradients).

For a layer ``y = f(x; θ)`` and random ``a``, ``t``, ``g`` of the right shapes, the oracle is::

    adjoint   Jᵀa = ∂⟨a, y⟩/∂x
    tangent   J t = ∂⟨Jᵀa, t⟩/∂a,   penalty grads ∂⟨Jᵀa, t⟩/∂θ,   curvature ∂⟨Jᵀa, t⟩/∂x
    backward  ∂⟨g, y⟩/∂x (+ curvature, injected on the same rows) and ∂⟨g, y⟩/∂θ
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import FP64_TOL, relative_error
from torch import nn

from fastgp.engine.base import StepContext
from fastgp.engine.trace import read_critic
from fastgp.nn import Residual
from fastgp.ops import composite

LAYERS = {
    "linear": (lambda: nn.Linear(7, 5), (3, 7)),
    "linear_3d_input": (lambda: nn.Linear(7, 5), (3, 4, 7)),
    "linear_leaky": (lambda: nn.Sequential(nn.Linear(7, 5), nn.LeakyReLU(0.1)), (3, 7)),
    "linear_relu_no_bias": (lambda: nn.Sequential(nn.Linear(7, 5, bias=False), nn.ReLU()), (3, 7)),
    "conv1d_stride_dilation_groups": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2,
                                                        groups=2), (3, 4, 11)),
    "conv2d_same": (lambda: nn.Conv2d(3, 4, 3, padding="same"), (2, 3, 5, 6)),
    "conv2d_leaky_groups": (lambda: nn.Sequential(nn.Conv2d(4, 6, 4, 2, 1, groups=2),
                                                  nn.LeakyReLU(0.2)), (2, 4, 8, 7)),
    "conv3d_relu": (lambda: nn.Sequential(nn.Conv3d(2, 3, 3, stride=(1, 2, 1), padding=1),
                                          nn.ReLU()), (2, 2, 4, 5, 3)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.3), (3, 4, 5)),
    "relu": (lambda: nn.ReLU(), (3, 9)),
    "silu": (lambda: nn.SiLU(), (3, 9)),
    "tanh": (lambda: nn.Tanh(), (3, 9)),
    "sigmoid": (lambda: nn.Sigmoid(), (3, 9)),
    "softplus": (lambda: nn.Softplus(beta=2.0, threshold=1.0), (3, 9)),
    "elu": (lambda: nn.ELU(alpha=0.7), (3, 9)),
    "gelu": (lambda: nn.GELU(), (3, 9)),
    "gelu_tanh": (lambda: nn.GELU(approximate="tanh"), (3, 9)),
    "layernorm": (lambda: nn.LayerNorm([4, 5]), (3, 2, 4, 5)),
    "layernorm_no_affine": (lambda: nn.LayerNorm(6, elementwise_affine=False), (3, 6)),
    "groupnorm": (lambda: nn.GroupNorm(2, 6), (3, 6, 4, 3)),
    "groupnorm_1d": (lambda: nn.GroupNorm(3, 6), (3, 6, 5)),
    "flatten": (lambda: nn.Flatten(), (3, 2, 4, 5)),
    "unflatten": (lambda: nn.Unflatten(1, (2, 5)), (3, 10)),
    "identity": (lambda: nn.Identity(), (3, 4)),
    "avgpool1d": (lambda: nn.AvgPool1d(3, stride=2, padding=1), (2, 3, 10)),
    "avgpool2d_ceil": (lambda: nn.AvgPool2d(3, stride=2, ceil_mode=True,
                                            count_include_pad=False, padding=1), (2, 3, 7, 6)),
    "avgpool3d": (lambda: nn.AvgPool3d(2), (2, 2, 4, 4, 4)),
    "adaptive_avgpool1d": (lambda: nn.AdaptiveAvgPool1d(3), (2, 3, 10)),
    "adaptive_avgpool2d": (lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
    "adaptive_avgpool3d": (lambda: nn.AdaptiveAvgPool3d(1), (2, 2, 3, 4, 5)),
    "learned_gain_offset": (lambda: Gain(), (3, 5)),
    "scaled_functional_linear": (lambda: ScaledLinear(), (3, 5)),
    "scaled_functional_conv": (lambda: ScaledConv(), (2, 4, 7, 6)),
    "residual_smooth": (lambda: Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.SiLU(),
                                                       nn.Conv2d(3, 3, 1)),
                                         nn.Sequential(nn.AvgPool2d(1), nn.Conv2d(3, 3, 1))),
                        (2, 3, 5, 5)),
    "residual_identity": (lambda: Residual(nn.Sequential(nn.ReLU(), nn.Linear(6, 6))), (3, 6)),
    "sequence_linear_silu_linear": (lambda: nn.Sequential(nn.Linear(3, 4), nn.SiLU(),
                                                          nn.Linear(4, 2)), (2, 3)),
    "instancenorm1d": (lambda: nn.InstanceNorm1d(4), (3, 4, 7)),
    "instancenorm2d_affine": (lambda: nn.InstanceNorm2d(3, affine=True), (2, 3, 4, 5)),
    "instancenorm3d_affine": (lambda: nn.InstanceNorm3d(2, affine=True), (2, 2, 3, 3, 4)),
    "maxpool1d": (lambda: nn.MaxPool1d(3, stride=2, padding=1), (2, 3, 10)),
    "maxpool2d_dilated_ceil": (lambda: nn.MaxPool2d(3, stride=2, dilation=2, ceil_mode=True),
                               (2, 3, 9, 8)),
    "maxpool3d": (lambda: nn.MaxPool3d(2), (2, 2, 4, 4, 4)),
    "conv2d_reflect": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
                       (2, 3, 5, 6)),
    "conv1d_replicate_leaky": (lambda: nn.Sequential(
        nn.Conv1d(3, 4, 3, padding=2, padding_mode="replicate"), nn.LeakyReLU(0.2)), (2, 3, 7)),
    "conv3d_reflect": (lambda: nn.Conv3d(2, 2, 3, padding=1, padding_mode="reflect"),
                       (2, 2, 4, 4, 3)),
    "conv1d_circular_leaky": (lambda: nn.Sequential(
        nn.Conv1d(3, 4, 3, padding=2, padding_mode="circular"), nn.LeakyReLU(0.2)), (2, 3, 7)),
    "conv2d_circular_same": (lambda: nn.Conv2d(3, 4, (3, 4), padding="same",
                                               padding_mode="circular"), (2, 3, 5, 6)),
    "conv3d_circular": (lambda: nn.Conv3d(2, 2, 3, padding=(1, 2, 1), padding_mode="circular"),
                        (2, 2, 4, 4, 3)),
    "batchnorm2d_eval": (lambda: _trained_batch_norm(nn.BatchNorm2d(3)), (2, 3, 4, 5)),
    "batchnorm1d_eval_no_affine": (lambda: _trained_batch_norm(nn.BatchNorm1d(4, affine=False)),
                                   (3, 4)),
    "dropout_eval": (lambda: nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).eval(), (3, 4)),
    # Training mode: the oracle and the rule draw their masks after the same seed.
    "dropout_train": (lambda: nn.Sequential(nn.Linear(7, 5), nn.Dropout(0.4)), (3, 7)),
    "dropout1d_train": (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.Dropout1d(0.5)), (3, 3, 7)),
    "dropout2d_train_in_place": (lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.2), nn.Dropout2d(0.5, inplace=True)), (3, 3, 5, 6)),
    "dropout3d_train": (lambda: nn.Dropout3d(0.3), (3, 4, 3, 2, 3)),
    "dropout_p1_train": (lambda: nn.Sequential(nn.Linear(4, 4), nn.Dropout(1.0)), (3, 4)),
    "dropout_functional": (lambda: Written(lambda x: F.dropout3d(
        torch.tanh(F.dropout(2 * x, 0.3, inplace=True)), p=0.6, training=True)),
                           (3, 4, 2, 3, 2)),
    "pools_functional": (lambda: Written(lambda x: F.adaptive_avg_pool2d(
        F.max_pool2d(F.avg_pool2d(x, 2, padding=1), kernel_size=2, stride=1), (2, 1))),
                         (2, 3, 7, 6)),
    "slices": (lambda: Written(lambda x: torch.cat([x[:, :2], x[:, 1, None]], 1)
                               + x[..., 1:4, :] - x[:, 0:3, ...].tanh()), (3, 4, 5)),
    "chunk_and_split": (lambda: Written(_pieces), (3, 6, 2)),
    "pad_functional": (lambda: Written(lambda x: F.pad(F.pad(x, [1, 2, 0, 1], mode="reflect"),
                                                       [1, 1, 2, 0], value=0.5)), (2, 3, 4, 5)),
    "pad_circular_1d": (lambda: Written(lambda x: F.pad(x, [3, 1], mode="circular")), (2, 3, 5)),
    "pad_circular_2d": (lambda: Written(lambda x: F.pad(x, [1, 3, 2, 0], mode="circular")),
                        (2, 3, 4, 5)),
    "pad_circular_3d": (lambda: Written(lambda x: F.pad(x, [0, 2, 1, 1, 3, 1], "circular")),
                        (2, 2, 4, 3, 5)),
    # torch crops by negative pads first, then wraps the cropped tensor.
    "pad_circular_crops": (lambda: Written(lambda x: F.pad(x, [-1, 2, 1, -2], mode="circular")),
                           (2, 3, 4, 5)),
    # The tensor ops between layers (fastgp.engine.tensor_ops), each inside a small forward.
    "view_size": (lambda: Written(lambda x: x.view(x.size(0), -1)), (3, 2, 4)),
    "flatten_unsqueeze_squeeze": (lambda: Written(
        lambda x: torch.flatten(x, 1).unsqueeze(1).squeeze(1)), (3, 2, 4)),
    "permute": (lambda: Written(lambda x: x.permute(0, 2, 3, 1)), (2, 3, 4, 5)),
    "transpose": (lambda: Written(lambda x: torch.transpose(x, -1, 1)), (2, 3, 4)),
    "sum_dims": (lambda: Written(lambda x: x.sum(dim=(2, 3))), (2, 3, 4, 5)),
    "mean_keepdim": (lambda: Written(lambda x: x.mean(-1, keepdim=True)), (2, 3, 4)),
    "scale_shift": (lambda: Written(lambda x: (-(2.5 * x) / 4 + 1) - 3), (3, 5)),
    "constant_minus": (lambda: Written(lambda x: 1.0 - x), (3, 5)),
    "sum_of_branches": (lambda: Written(lambda x: torch.tanh(x) - 0.5 * x + torch.relu(x)),
                        (3, 5)),
    "cat": (lambda: Written(lambda x: torch.cat([x, torch.sigmoid(x), 2 * x], dim=1)), (2, 3, 4)),
    "inplace_add": (lambda: Written(_in_place_add), (3, 5)),
    "functional_activations": (lambda: Written(lambda x: F.elu(F.leaky_relu(x, 0.1), alpha=0.5)
                                                + F.softplus(x, beta=2.0, threshold=1.0)
                                                + F.gelu(x) + F.silu(x)), (3, 5)),
}


class Written(nn.Module):
    """A module whose forward is the given function of its input (the ops as code writes them)."""

    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def _trained_batch_norm(norm):
    """A BatchNorm with running statistics of its own and random γ, β, in eval mode."""
    shape = (8, norm.num_features, 3, 3) if isinstance(norm, nn.BatchNorm2d) else (
        8, norm.num_features)
    with torch.no_grad():
        for _ in range(3):
            norm(torch.randn(shape) * 2 + 1)
        if norm.affine:
            norm.weight.normal_()
            norm.bias.normal_()
    return norm.eval()


def _pieces(x):
    a, b = x.chunk(2, dim=1)
    first, _, third = torch.split(x, [1, 2, 3], dim=1)
    return torch.cat([torch.tanh(a) * 2 + b, first, third], dim=1)


def _in_place_add(x):
    h = 2 * x
    h += torch.tanh(x)
    return h


class Gain(nn.Module):
    """A learned gain and offset read outside a layer (the gain scales the input gradient)."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.rand(1, 5) + 0.5)
        self.offset = nn.Parameter(torch.randn(5))

    def forward(self, x):
        return x * self.gain - self.offset


class ScaledLinear(nn.Module):
    """``F.linear`` with a weight scaled in forward (equalized learning rate)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 5))
        self.bias = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return F.linear(x, self.weight * 0.5, self.bias)


class ScaledConv(nn.Module):
    """``F.conv2d`` with a weight scaled in forward, strided, padded and grouped."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 2, 3, 3))
        self.bias = nn.Parameter(torch.randn(6))

    def forward(self, x):
        return F.conv2d(x, self.weight * 0.3, self.bias, 2, 1, 1, 2)


def _context(module: nn.Module, rows: int) -> tuple[StepContext, list[nn.Parameter]]:
    parameters = list(module.parameters())
    ctx = StepContext(None, None, slice(0, rows), composite.KERNELS.bias_leaky_relu,
                      composite.KERNELS.leaky_relu_mask_backward, [None] * len(parameters))
    return ctx, parameters


def _oracle(module, x, a, t, g):
    x = x.clone().requires_grad_(True)
    a = a.clone().requires_grad_(True)
    parameters = list(module.parameters())
    y = module(x)
    (adjoint,) = torch.autograd.grad(y, x, a, create_graph=True)
    (tangent,) = torch.autograd.grad(adjoint, a, t, retain_graph=True)
    q = (adjoint * t).sum()
    curvature, *penalty_grads = torch.autograd.grad(q, [x, *parameters], allow_unused=True,
                                                    retain_graph=True)
    backward_input, *backward_grads = torch.autograd.grad(y, [x, *parameters], g, allow_unused=True)
    zeros = lambda grads: [torch.zeros_like(p) if d is None else d  # noqa: E731
                           for p, d in zip(parameters, grads, strict=True)]
    curvature = torch.zeros_like(x) if curvature is None else curvature
    return (y.detach(), adjoint.detach(), tangent, zeros(penalty_grads),
            backward_input + curvature, zeros(backward_grads))


def _filled(grads, parameters):
    return [torch.zeros_like(p) if d is None else d for p, d in zip(parameters, grads, strict=True)]


@pytest.mark.parametrize("name", list(LAYERS))
def test_rule_passes_match_autograd(name):
    build, shape = LAYERS[name]
    torch.manual_seed(0)
    module = build().double()
    x = torch.randn(shape, dtype=torch.float64)
    y_shape = module(x).shape
    a, g = torch.randn(y_shape, dtype=torch.float64), torch.randn(y_shape, dtype=torch.float64)
    t = torch.randn(shape, dtype=torch.float64)
    torch.manual_seed(1)  # a dropout in training mode draws the same mask in both
    expected = _oracle(module, x, a, t, g)

    rule = read_critic(module, list(module.parameters()))
    ctx, parameters = _context(module, shape[0])
    with torch.no_grad():
        torch.manual_seed(1)
        y, saved = rule.forward(x, ctx)
        adjoint = rule.adjoint(saved, a, ctx)
        tangent = rule.tangent(saved, t, ctx)
        rule.factor_gradients(ctx)  # parameters read outside a layer (gains, scaled weights)
        penalty_grads = _filled(ctx.grads[:len(parameters)], parameters)
        ctx.grads[:len(parameters)] = [None] * len(parameters)
        backward_input = rule.backward(saved, g, ctx, need_input=True)
        rule.factor_gradients(ctx)
        backward_grads = _filled(ctx.grads[:len(parameters)], parameters)

    actual = (y, adjoint, tangent, penalty_grads, backward_input, backward_grads)
    labels = ("forward", "adjoint", "tangent", "penalty parameter grads",
              "backward input (+ curvature)", "backward parameter grads")
    if isinstance(module, nn.Sequential | Residual):
        # Inside a block, the curvature of an inner layer reaches the parameters below it in the
        # backward pass, not the tangent pass: only the sum of the two is defined per block.
        totals = lambda first, second: [p + q for p, q in zip(first, second, strict=True)]  # noqa: E731
        actual = (*actual[:3], totals(actual[3], actual[5]), actual[4])
        expected = (*expected[:3], totals(expected[3], expected[5]), expected[4])
        labels = (*labels[:3], "parameter grads", labels[4])
    errors = {label: relative_error(got, want)
              for label, got, want in zip(labels, actual, expected, strict=True)
              if not isinstance(want, list) or want}
    assert max(errors.values()) <= FP64_TOL, errors


def test_piecewise_linear_rules_have_no_curvature_and_smooth_ones_do():
    def rule(critic):
        return read_critic(critic, list(critic.parameters()))

    assert not rule(nn.Sequential(nn.Conv2d(1, 1, 3), nn.LeakyReLU(), nn.AvgPool2d(2),
                                  nn.Flatten(), nn.Linear(1, 1))).curvature
    for smooth in (nn.SiLU(), nn.LayerNorm(3), nn.GroupNorm(1, 3), nn.Tanh()):
        assert rule(nn.Sequential(nn.Linear(3, 3), smooth)).curvature


def test_linear_followed_by_leaky_relu_is_one_fused_rule():
    critic = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.2), nn.Linear(4, 1))
    graph = read_critic(critic, list(critic.parameters()))
    assert len(graph.nodes) == 2
    assert graph.nodes[0].rule.rule.negative_slope == 0.2


@pytest.mark.parametrize("build,shape,memory_format", [
    (lambda: nn.Dropout(0.3), (4, 3, 5, 6), torch.contiguous_format),
    (lambda: nn.Dropout(0.3), (4, 3, 5, 6), torch.channels_last),
    (lambda: nn.Dropout(0.3), (4, 2, 3, 5, 6), torch.channels_last_3d),
    (lambda: Written(lambda x: F.dropout(2 * x, 0.7, inplace=True)), (5, 9),
     torch.contiguous_format),
    (lambda: nn.Dropout1d(0.3), (4, 3, 5), torch.contiguous_format),
    (lambda: nn.Dropout2d(0.3), (4, 3, 5, 6), torch.channels_last),
    (lambda: nn.Dropout3d(0.3), (4, 3, 5, 6, 2), torch.contiguous_format),
    (lambda: Written(lambda x: F.dropout(x, 0.3)), (4, 3, 5, 6), torch.channels_last),
    (lambda: Written(lambda x: F.dropout2d(x, 0.3)), (4, 3, 5, 6), torch.channels_last),
], ids=["dropout", "dropout_channels_last", "dropout_channels_last_3d", "dropout_in_place",
        "dropout1d", "dropout2d_channels_last", "dropout3d", "functional_channels_last",
        "functional_2d_channels_last"])
def test_dropout_draws_the_mask_of_the_modules_own_call(build, shape, memory_format):
    """The engine's mask is the one ``module(h)`` applies to the contiguous activation of the
    critic's eager call (a channels-last one included: the engine's format for image critics),
    and the generator ends where that call leaves it."""
    module = build().double()
    h = torch.randn(shape, dtype=torch.float64)
    torch.manual_seed(2)
    expected = module(h.clone())
    state = torch.get_rng_state()
    rule = read_critic(module, [])
    torch.manual_seed(2)
    with torch.no_grad():
        got, _ = rule.forward(h.contiguous(memory_format=memory_format), _context(module, 4)[0])
    assert torch.equal(got, expected)
    assert torch.equal(torch.get_rng_state(), state)
    assert got.is_contiguous(memory_format=memory_format)  # the step keeps its format
    assert 0 < (got == 0).sum() < got.numel()
