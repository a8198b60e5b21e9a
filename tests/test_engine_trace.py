"""Critics as people write them — subclasses with their own forward — read from their code and
stepped by the engine: fp64 against the autograd oracle (≤ 1e-10), fp32 (≤ 1e-5), and the
errors for what the reader cannot read, naming the op and its line."""

import copy

import pytest
import torch
import torch.nn.functional as F
from critics import ResidualCritic, SequenceCritic
from helpers import FP32_TOL, FP64_TOL, relative_error
from torch import nn
from usual_critics import USUAL_CRITICS

import fastgp
from fastgp import reference
from fastgp.engine import UnsupportedLayerError
from fastgp.models import InstanceNormDCGANCritic, SumPoolResNetCritic


class DCGANStyle(nn.Module):
    """Ends in a 4×4 convolution: the scores come out as (B, 1, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8, 16, 4, 2, 1), nn.GroupNorm(4, 16), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(16, 1, 4, 1, 0))

    def forward(self, x):
        return self.main(x)


class ViewHead(nn.Module):
    """``out.view(out.size(0), -1)`` then a linear head, squeezed to (B,)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 1)

    def forward(self, x):
        out = F.leaky_relu(self.conv(x), 0.2)
        out = out.view(out.size(0), -1)
        return self.fc(out).squeeze(1)


class PreActivationBlock(nn.Module):
    """In-place ReLU at the head of a residual branch: eager PyTorch changes the skip too."""

    def __init__(self, channels):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        h = self.relu(x)
        h = self.conv2(self.relu(self.conv1(h)))
        return x + 0.3 * h


class ResNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.block = PreActivationBlock(6)
        self.fc = nn.Linear(6, 1)

    def forward(self, x):
        h = self.block(self.stem(x))
        h = F.relu(h)
        return self.fc(h.sum(dim=(2, 3)))  # global sum pooling


class InPlaceSum(nn.Module):
    """``h += self.skip(x)``, a module used twice, transpose/permute/cat/chunk-free glue."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 8)
        self.skip = nn.Linear(5, 8)
        self.shared = nn.Linear(8, 8)
        self.act = nn.LeakyReLU(0.2)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        h = self.act(self.a(x))
        h += self.skip(x)
        h = self.act(self.shared(h))
        g = self.shared(h) / 2 - 1.0
        both = torch.cat([h, -g], dim=1)
        return self.out(both)


class SequenceModel(nn.Module):
    """(B, L, C) sequences: transpose to (B, C, L), 1-D convolutions, mean over time."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        h = torch.tanh(self.conv(x.transpose(1, 2)))
        h = h.permute(0, 2, 1).mean(1)
        return self.fc(h).view(-1)


class Smooth(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 1)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        h = F.silu(self.l1(x))
        h = h + F.gelu(self.norm(self.l2(h)), approximate="tanh")
        return self.l3(F.softplus(h, beta=2.0)).unsqueeze(-1).unsqueeze(-1)


class PeriodicCritic(nn.Module):
    """Circular padding, as for periodic signals: a convolution's padding_mode and F.pad with
    asymmetric pads."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, padding_mode="circular")
        self.down = nn.Conv2d(6, 4, (3, 4), stride=2)
        self.fc = nn.Linear(4 * 4 * 4, 1)

    def forward(self, x):
        h = F.leaky_relu(self.conv(x), 0.2)
        h = self.down(F.pad(h, [1, 2, 0, 1], mode="circular"))
        return self.fc(F.leaky_relu(h, 0.2).flatten(1))


class Doubling(nn.Sequential):
    def forward(self, x):
        return 2 * super().forward(x)


class EqualizedConv(nn.Module):
    """ProGAN/StyleGAN's equalized learning rate: a raw weight scaled in forward."""

    def __init__(self, channels_in, channels_out, kernel, **options):
        super().__init__()
        groups = options.get("groups", 1)
        self.weight = nn.Parameter(torch.randn(channels_out, channels_in // groups, kernel,
                                               kernel))
        self.bias = nn.Parameter(0.1 * torch.randn(channels_out))
        self.scale = (channels_in // groups * kernel * kernel) ** -0.5
        self.options = options

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, **self.options)


class EqualizedCritic(nn.Module):
    """Functional layers with weights computed in forward: scaled convolutions (stride,
    padding='same', dilation, groups), a plain F.linear on a parameter and a smooth head."""

    def __init__(self):
        super().__init__()
        self.c1 = EqualizedConv(3, 8, 3, padding="same", dilation=1)
        self.c2 = EqualizedConv(8, 8, 4, stride=(2, 2), padding=1, groups=2)
        self.c3 = EqualizedConv(4, 8, 3, padding=2, dilation=2)
        self.w = nn.Parameter(torch.randn(6, 8 * 4 * 4) * 0.1)
        self.out = nn.Parameter(torch.randn(1, 6))

    def forward(self, x):
        h = F.leaky_relu(self.c1(x), 0.2)
        h = F.leaky_relu(self.c2(h), 0.2)
        h = F.leaky_relu(self.c3(h[:, :4]), 0.2)
        return F.linear(torch.tanh(F.linear(h.flatten(1), self.w)), self.out)


class LearnedGains(nn.Module):
    """Parameters read outside a layer: a SAGAN-style gain on a residual branch (zero at
    init in SAGAN; not here, so that it matters), a learned offset before a smooth activation
    and a per-channel scale broadcast over the batch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.branch = nn.Linear(6, 6)
        self.gamma = nn.Parameter(torch.tensor(0.3))
        self.offset = nn.Parameter(torch.randn(6))
        self.scale = nn.Parameter(torch.rand(1, 6) + 0.5)
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        h = F.leaky_relu(self.fc(x), 0.2)
        h = h + self.gamma * F.leaky_relu(self.branch(h), 0.2)
        h = torch.tanh(h * self.scale - self.offset)
        return self.head(h * h.shape[1] ** -0.5)  # a factor computed from a shape


CRITICS = {
    "dcgan_b111": (DCGANStyle, (3, 16, 16)),
    "view_head": (ViewHead, (3, 8, 8)),
    "resnet_inplace_head": (ResNetStyle, (3, 8, 8)),
    "inplace_sum_shared": (InPlaceSum, (5,)),
    "sequence_transpose": (SequenceModel, (7, 4)),
    "smooth_functional": (Smooth, (3,)),
    "sequential_subclass": (lambda: Doubling(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), (3,)),
    "residual_critic": (ResidualCritic, (3, 8, 8)),
    "instance_norm_dcgan": (lambda: InstanceNormDCGANCritic(3, 4), (3, 32, 32)),
    "sum_pool_resnet": (lambda: SumPoolResNetCritic(3, 4), (3, 8, 8)),
    "sequence_critic": (SequenceCritic, (4, 9)),
    "learned_gains": (LearnedGains, (4,)),
    "equalized_lr": (EqualizedCritic, (3, 8, 8)),
    **USUAL_CRITICS,
    "circular_padding": (PeriodicCritic, (3, 8, 8)),
}


def _case(name, dtype, batch=5):
    build, shape = CRITICS[name]
    torch.manual_seed(0)
    critic = build().to(dtype)
    generator = torch.Generator().manual_seed(1)
    real = torch.randn((batch, *shape), generator=generator, dtype=dtype)
    fake = torch.randn((batch, *shape), generator=generator, dtype=dtype)
    return critic, real, fake, torch.rand(batch, generator=generator, dtype=dtype)


def _oracle(critic, real, fake, eps):
    """The canonical eager critic loss in fp64 (the critic's own eager forward, in-place ops
    and all) and its parameter gradients."""
    critic = copy.deepcopy(critic).double()
    real, fake, eps = real.double(), fake.double(), eps.double()
    w_loss = critic(fake).mean() - critic(real).mean()
    penalty, norms = reference.gradient_penalty(lambda x: critic(x).reshape(x.shape[0]), real,
                                                fake, eps, 10.0)
    grads = torch.autograd.grad(w_loss + penalty, list(critic.parameters()))
    return penalty.detach(), norms.detach(), grads


@pytest.mark.parametrize("name", CRITICS)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, FP64_TOL), (torch.float32, FP32_TOL)])
def test_critics_as_written_match_the_oracle(name, dtype, tolerance):
    critic, real, fake, eps = _case(name, dtype)
    penalty, norms, grads = _oracle(critic, real, fake, eps)
    result = fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    assert relative_error([p.grad for p in critic.parameters()], list(grads)) <= tolerance
    assert relative_error(result.penalty, penalty) <= tolerance
    assert relative_error(result.norms, norms) <= tolerance


def test_in_place_relu_at_a_residual_head_changes_the_skip_as_in_eager():
    """The skip reads relu(x), not x: the oracle runs the module eagerly, and a reading that
    kept x on the skip differs from it by far more than rounding."""
    critic, real, fake, eps = _case("resnet_inplace_head", torch.float64)
    fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    engine = [p.grad.clone() for p in critic.parameters()]

    class SkipKeepsInput(ResNetStyle):
        def forward(self, x):
            h = self.stem(x)
            branch = self.block.conv2(F.relu(self.block.conv1(F.relu(h))))
            return self.fc(F.relu(h + 0.3 * branch).sum(dim=(2, 3)))

    other = SkipKeepsInput().double()
    other.load_state_dict(critic.state_dict())
    wrong = _oracle(other, real, fake, eps)[2]
    assert relative_error(engine, list(wrong)) > 1e-3


def test_micro_batches_and_compile_read_the_traced_graph_alike():
    critic, real, fake, eps = _case("resnet_inplace_head", torch.float32, batch=6)
    fused = fastgp.FusedCritic(critic, backend="torch")
    fused.step(real, fake, eps=eps)
    whole = [p.grad.clone() for p in critic.parameters()]
    fused.step(real, fake, eps=eps, micro_batch=4)
    assert relative_error([p.grad for p in critic.parameters()], whole) <= FP32_TOL

    torch._dynamo.reset()

    def step(real, fake, eps):
        result = fused.step(real, fake, eps=eps)
        return result.loss, [p.grad for p in critic.parameters()]

    loss, grads = torch.compile(step, fullgraph=True)(real, fake, eps)
    assert relative_error([g.clone() for g in grads], whole) <= FP32_TOL


class ControlFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: no graph can hold it
            return self.fc(x)
        return -self.fc(x)


class Bilinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        return self.head(self.fc(x) * x)


class MatmulWithParameter(nn.Module):
    """A parameter used by ``matmul`` (no rule) outside a layer."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, 3))

    def forward(self, x):
        return torch.matmul(x, self.weight.t())


class BatchMixing(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(x - x.mean(0, keepdim=True))


class ViewOfChangedTensor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        h = self.fc(x)
        v = h.view(h.shape[0], 3)
        h.relu_()
        return self.head(torch.cat([h, v], 1))


class StackedPieces(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(torch.cat(x.chunk(2, 1)[::-1], 1))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x, y):
        return self.fc(x) + y


class UnknownLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.drop = nn.Hardswish()
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        return self.head(self.drop(self.fc(x)))


class AlphaDropoutCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(F.alpha_dropout(x, 0.2, training=True))


@pytest.mark.parametrize("critic,words", [
    (ControlFlow(), ["cannot be traced", "test_engine_trace.py:", "if x.sum() > 0"]),
    (Bilinear(), ["mul", "test_engine_trace.py:", "self.fc(x) * x", "bilinear"]),
    (MatmulWithParameter(), ["parameter or buffer", "torch.matmul(x, self.weight.t())"]),
    (TwoInputs(), ["second input 'y'", "cond="]),
    (StackedPieces(), ["pieces", "one at a time by integer position", "x.chunk(2, 1)[::-1]"]),
    (UnknownLayer(), ["'drop'", "Hardswish"]),
    (AlphaDropoutCall(), ["alpha_dropout", "F.alpha_dropout(x, 0.2, training=True)"]),
    (ViewOfChangedTensor(), ["relu_", "h.view(h.shape[0], 3)", "h.relu_()", "aliasing"]),
])
def test_what_the_reader_cannot_read_is_refused_naming_the_op_and_line(critic, words):
    with pytest.raises(UnsupportedLayerError) as error:
        fastgp.FusedCritic(critic)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_an_op_that_mixes_the_batch_is_refused_when_it_runs():
    fused = fastgp.FusedCritic(BatchMixing().double())
    real = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(UnsupportedLayerError, match="mixes or drops the batch dimension"):
        fused.step(real, real + 1)
