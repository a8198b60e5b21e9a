"""The drop-in penalty on the engine's explicit passes: the same penalty and parameter gradients
as autograd's double backward (fp64 ≤ 1e-10), the fallback and its warning, method="explicit",
and a cache that is never stale."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from critics import DROPOUT_CRITICS, FAMILY_IDS, ConditionalCritic, family
from helpers import FP32_TOL, FP64_TOL, relative_error
from test_engine_trace import CRITICS as TRACED
from test_engine_trace import _case
from torch import nn

import fastgp
from fastgp.engine import UnsupportedLayerError


def _user_step(critic, real, fake, eps, method, penalty="gp"):
    """The user's own WGAN-GP critic loss with the drop-in penalty line; its gradients."""
    critic.zero_grad(set_to_none=True)
    loss = critic(fake).mean() - critic(real).mean()
    if penalty == "gp":
        value = fastgp.gradient_penalty(critic, real, fake, eps=eps, method=method)
    elif penalty == "lp":
        value = fastgp.gradient_penalty(critic, real, fake, eps=eps, one_sided=True,
                                        center=0.5, weight=3.0, method=method)
    else:
        value = fastgp.r1_penalty(critic, real, 4.0, method=method)
    (loss + value).backward()
    return value.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                            for p in critic.parameters()]


def _traced(name, dtype=torch.float64):
    return _case(name, dtype)


@pytest.mark.parametrize("name", list(TRACED))
@pytest.mark.parametrize("penalty", ["gp", "lp", "r1"])
def test_explicit_drop_in_equals_autograd_on_critics_as_written(name, penalty):
    critic, real, fake, eps = _traced(name)
    explicit = _user_step(critic, real, fake, eps, "explicit", penalty)
    autograd = _user_step(critic, real, fake, eps, "autograd", penalty)
    assert relative_error(explicit[0], autograd[0]) <= FP64_TOL
    assert relative_error(explicit[1], autograd[1]) <= FP64_TOL


@pytest.mark.parametrize("fam", [f for f in FAMILY_IDS if f != "conditional"])
def test_auto_drop_in_equals_autograd_on_the_test_families_in_fp32(fam):
    """Readable or not, ``auto`` gives autograd's gradients; readable ones take the engine."""
    critic = family(fam).critic().float()
    real, fake, eps = (t.float() for t in family(fam).inputs(6))
    try:
        fastgp.FusedCritic(critic)
        readable = True
    except UnsupportedLayerError:
        readable = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback's warning has its own test
        auto = _user_step(critic, real, fake, eps, "auto")
    autograd = _user_step(critic, real, fake, eps, "autograd")
    assert relative_error(auto[1], autograd[1]) <= FP32_TOL
    if not readable:
        with pytest.raises(UnsupportedLayerError):
            fastgp.gradient_penalty(critic, real, fake, eps=eps, method="explicit")


@pytest.mark.parametrize("name", list(DROPOUT_CRITICS))
@pytest.mark.parametrize("penalty", ["gp", "lp", "r1"])
def test_dropout_in_training_mode_gives_autograds_penalty_and_gradients(name, penalty):
    """Same seed, same masks: the engine draws each dropout's mask in its forward as the
    critic's own call does, and shares it with the adjoint and tangent passes, as autograd's
    double backward shares the mask of its one call."""
    build, shape = DROPOUT_CRITICS[name]
    torch.manual_seed(0)
    critic = build().double()
    generator = torch.Generator().manual_seed(1)
    real, fake = (torch.randn((6, *shape), generator=generator, dtype=torch.float64)
                  for _ in range(2))
    eps = torch.rand(6, generator=generator, dtype=torch.float64)
    results = {}
    for method in ("explicit", "autograd", "eval"):
        critic.train(method != "eval")
        torch.manual_seed(2)
        results[method] = _user_step(critic, real, fake, eps,
                                     "explicit" if method == "eval" else method, penalty)
    assert relative_error(results["explicit"][0], results["autograd"][0]) <= FP64_TOL
    assert relative_error(results["explicit"][1], results["autograd"][1]) <= FP64_TOL
    assert relative_error(results["explicit"][1], results["eval"][1]) > 1e-3  # masks applied


def test_norms_are_returned_on_the_explicit_path():
    critic, real, fake, eps = _traced("resnet_inplace_head")
    _, norms = fastgp.gradient_penalty(critic, real, fake, eps=eps, return_norms=True,
                                       method="explicit")
    _, expected = fastgp.gradient_penalty(critic, real, fake, eps=eps, return_norms=True,
                                          method="autograd")
    assert not norms.requires_grad and relative_error(norms, expected) <= FP64_TOL


class Unreadable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(x) * x[:, :1]


def test_auto_falls_back_once_per_critic_with_a_warning_naming_the_op_and_line():
    critic = Unreadable().double()
    real, fake = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"Unreadable takes autograd's double backward .*"
                                         r"test_engine_drop_in.py:\d+ \(return self.fc\(x\) \* x"):
        first = fastgp.gradient_penalty(critic, real, fake, eps=torch.full((4,), 0.5,
                                                                            dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        second = fastgp.gradient_penalty(critic, real, fake, eps=torch.full((4,), 0.5,
                                                                             dtype=torch.float64))
    assert torch.equal(first, second)
    with pytest.raises(UnsupportedLayerError,
                       match="method='explicit' is not possible: mul at .* multiplies two"):
        fastgp.gradient_penalty(critic, real, fake, method="explicit")
    with pytest.raises(ValueError, match="method must be one of"):
        fastgp.gradient_penalty(critic, real, fake, method="fast")


@pytest.mark.parametrize("change", ["append", "eval", "double", "frozen", "new_weight"])
def test_the_cached_reading_follows_every_change_of_the_critic(change):
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    real, fake, eps = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5)
    _user_step(critic, real, fake, eps, "explicit")  # read and cached
    if change == "append":
        critic.append(nn.Tanh())
    elif change == "eval":
        critic.eval()
    elif change == "double":
        critic.double()
        real, fake, eps = real.double(), fake.double(), eps.double()
    elif change == "frozen":
        critic[0].requires_grad_(False)
    else:
        critic[2].weight = nn.Parameter(torch.randn(1, 8))
    explicit = _user_step(critic, real, fake, eps, "explicit")
    autograd = _user_step(critic, real, fake, eps, "autograd")
    tolerance = FP64_TOL if change == "double" else FP32_TOL
    assert relative_error(explicit[1], autograd[1]) <= tolerance
    if change == "frozen":
        assert critic[0].weight.grad is None


def test_autocast_and_functions_take_autograd_under_auto_with_the_reason():
    critic, real, fake, eps = _traced("dcgan_b111", torch.float32)
    with pytest.warns(UserWarning, match="autocast"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fastgp.gradient_penalty(critic, real, fake)
    with pytest.raises(UnsupportedLayerError, match="function"):
        fastgp.gradient_penalty(lambda x: critic(x), real, fake, method="explicit")


def _penalty_gradients(critic, real, fake, eps, method, scaler=None):
    critic.zero_grad(set_to_none=True)
    value = fastgp.gradient_penalty(critic, real, fake, eps=eps, method=method, scaler=scaler)
    (value if scaler is None else scaler.scale(value)).backward()
    return value.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                            for p in critic.parameters()]


def test_explicit_under_autocast_runs_fp32_passes_and_a_scaler_scales_its_gradients():
    """Under bf16 autocast, method='explicit' runs the passes in the critic's dtype: the penalty
    and its gradients are fp32-exact against the fp64 oracle (autograd under autocast is only
    bf16-exact). With a GradScaler the user's scaled backward scales them, and unscaling gives
    them back."""
    critic, real, fake, eps = _traced("dcgan_b111", torch.float32)
    oracle = copy.deepcopy(critic).double()
    expected = _penalty_gradients(oracle, real.double(), fake.double(), eps.double(), "autograd")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explicit = _penalty_gradients(critic, real, fake, eps, "explicit")
        autocast_autograd = _penalty_gradients(critic, real, fake, eps, "autograd")
    assert explicit[0].dtype == torch.float32
    assert relative_error(explicit[0], expected[0]) <= FP32_TOL
    assert relative_error(explicit[1], expected[1]) <= FP32_TOL
    # bf16 matmuls in the double backward: about 8e-2 on this critic.
    assert relative_error(autocast_autograd[1], expected[1]) > 100 * FP32_TOL
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scaled = _penalty_gradients(critic, real, fake, eps, "explicit", scaler)
    assert relative_error([g / 1024.0 for g in scaled[1]], explicit[1]) <= FP32_TOL


def test_the_explicit_penalty_accumulates_into_existing_gradients_like_autograd():
    """A second backward adds, as autograd's does (gradient accumulation over micro-steps)."""
    critic, real, fake, eps = _traced("view_head")
    twice = {}
    for method in ("explicit", "autograd"):
        model = copy.deepcopy(critic)
        for _ in range(2):
            fastgp.gradient_penalty(model, real, fake, eps=eps, method=method).backward()
        twice[method] = [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                         for p in model.parameters()]
    assert relative_error(twice["explicit"], twice["autograd"]) <= FP64_TOL


def test_a_compiled_user_step_with_the_drop_in_equals_eager():
    """autograd's double backward cannot be compiled; the explicit drop-in can."""
    torch._dynamo.reset()
    critic, real, fake, eps = _traced("inplace_sum_shared", torch.float32)

    def step(real, fake, eps):
        critic.zero_grad(set_to_none=True)
        loss = critic(fake).mean() - critic(real).mean()
        loss = loss + fastgp.gradient_penalty(critic, real, fake, eps=eps, check_inputs=False,
                                              method="explicit")
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in critic.parameters()]

    eager = step(real, fake, eps)
    compiled = torch.compile(step)(real, fake, eps)
    assert relative_error(compiled[1] + [compiled[0]], eager[1] + [eager[0]]) <= FP32_TOL


WORLD, BATCH = 2, 8


def _ddp_problem():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 16), nn.LeakyReLU(0.2), nn.Linear(16, 16), nn.Tanh(),
                           nn.Linear(16, 1)).double()
    stream = torch.Generator().manual_seed(1)
    real = torch.randn(BATCH, 3, generator=stream, dtype=torch.float64)
    fake = torch.randn(BATCH, 3, generator=stream, dtype=torch.float64)
    return critic, real, fake, torch.rand(BATCH, generator=stream, dtype=torch.float64)


def _ddp_worker(rank, store, out_dir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    critic, real, fake, eps = _ddp_problem()
    model = DistributedDataParallel(critic)
    rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    loss = model(fake[rows]).mean() - model(real[rows]).mean()
    loss = loss + fastgp.gradient_penalty(model, real[rows], fake[rows], eps=eps[rows],
                                          method="explicit")
    loss.backward()  # DDP's hooks average the gradients over the processes
    torch.save([p.grad for p in critic.parameters()], f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def test_user_ddp_with_the_drop_in_gives_the_single_process_gradients(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    critic, real, fake, eps = _ddp_problem()
    single = _user_step(critic, real, fake, eps, "autograd")[1]
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert relative_error(got, single) <= FP64_TOL


class LabelMapCritic(nn.Module):
    """A conditional critic as cGAN code writes it: one-hot label maps concatenated to x."""

    def __init__(self, classes=3):
        super().__init__()
        self.classes = classes
        self.conv = nn.Conv2d(3 + classes, 6, 3, padding=1)
        self.norm = nn.InstanceNorm2d(6, affine=True)
        self.head = nn.Linear(6, 1)

    def forward(self, x, labels):
        maps = F.one_hot(labels, self.classes).to(x.dtype)[:, :, None, None]
        maps = maps.expand(-1, -1, x.shape[2], x.shape[3])
        h = F.leaky_relu(self.norm(self.conv(torch.cat([x, maps], 1))), 0.2)
        return self.head(h.mean(dim=(2, 3)))


class SourceImageCritic(nn.Module):
    """pix2pix-style: the source image is concatenated to the (real or generated) target."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 4, 2, 1)
        self.out = nn.Conv2d(4, 1, 4)

    def forward(self, target, source):
        return self.out(F.leaky_relu(self.conv(torch.cat([source, target], dim=1)), 0.2))


class ProjectionConvCritic(nn.Module):
    """SNGAN-style projection: ``C(x, y) = ψ(h) + ⟨embed(y), h⟩`` with ``h`` sum-pooled conv
    features, a smooth activation (curvature) before the pooling."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, 1, 1)
        self.c2 = nn.Conv2d(8, 8, 4, 2, 1)
        self.psi = nn.Linear(8, 1)
        self.embed = nn.Embedding(classes, 8)

    def forward(self, x, y):
        h = F.silu(self.c2(F.leaky_relu(self.c1(x), 0.2)))
        h = torch.sum(h, dim=(2, 3))
        out = self.psi(h)
        if y is not None:
            out = out + torch.sum(self.embed(y) * h, dim=1, keepdim=True)
        return out


class EmbeddingConcatCritic(nn.Module):
    """A label embedding concatenated to the features, then a smooth head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, 2, 1)
        self.embed = nn.Embedding(classes, 5)
        self.fc = nn.Linear(4 * 4 * 4 + 5, 6)
        self.out = nn.Linear(6, 1)

    def forward(self, x, y):
        h = F.leaky_relu(self.conv(x), 0.2).flatten(1)
        return self.out(torch.tanh(self.fc(torch.cat([h, self.embed(y)], dim=1))))


def _labels():
    return torch.tensor([0, 2, 1, 2])


@pytest.mark.parametrize("critic_class,shape,cond", [
    (LabelMapCritic, (3, 8, 8), _labels),
    (SourceImageCritic, (3, 8, 8), lambda: torch.randn(4, 3, 8, 8, dtype=torch.float64)),
    (ConditionalCritic, (5,), _labels),
    (ProjectionConvCritic, (3, 8, 8), _labels),
    (EmbeddingConcatCritic, (3, 8, 8), _labels),
])
def test_conditional_critics_take_the_explicit_path_with_cond(critic_class, shape, cond):
    torch.manual_seed(0)
    critic = critic_class().double()
    condition = cond()
    real, fake = (torch.randn(4, *shape, dtype=torch.float64) for _ in range(2))
    eps = torch.rand(4, dtype=torch.float64)
    grads, penalties = {}, {}
    for method in ("explicit", "autograd"):
        critic.zero_grad(set_to_none=True)
        loss = critic(fake, condition).mean() - critic(real, condition).mean()
        penalties[method] = fastgp.gradient_penalty(critic, real, fake, eps=eps, cond=condition,
                                                    method=method)
        (loss + penalties[method]).backward()
        grads[method] = [p.grad.clone() for p in critic.parameters()]
    assert relative_error(penalties["explicit"], penalties["autograd"]) <= FP64_TOL
    assert relative_error(grads["explicit"], grads["autograd"]) <= FP64_TOL
    with pytest.raises(ValueError, match="cond="):
        fastgp.FusedCritic(critic, conditions=1).step(real, fake)
    with pytest.raises(UnsupportedLayerError, match="second input"):
        fastgp.FusedCritic(critic)


def test_the_embedding_of_a_projection_critic_gets_the_penalty_gradient():
    """The penalty reaches the embedding only through the tangent pass (``ē += a ⊙ t``): with
    that term dropped the gradient would be the W-loss's alone."""
    torch.manual_seed(0)
    critic = ConditionalCritic().double()
    real, fake = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    eps = torch.rand(4, dtype=torch.float64)
    penalty = fastgp.gradient_penalty(critic, real, fake, eps=eps, cond=_labels(),
                                      method="explicit")
    penalty.backward()
    expected = fastgp.gradient_penalty(critic, real, fake, eps=eps, cond=_labels(),
                                       method="autograd")
    (embedding_grad,) = torch.autograd.grad(expected, [critic.embed.weight])
    assert embedding_grad.abs().sum() > 0
    assert relative_error(critic.embed.weight.grad, embedding_grad) <= FP64_TOL


class BatchMean(nn.Module):
    """Readable op by op, but ``x.mean(0)`` mixes the batch: refused only when it runs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(x - x.mean(0, keepdim=True))


def test_an_op_refused_when_it_runs_falls_back_under_auto():
    critic = BatchMean().double()
    real, fake = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    eps = torch.rand(4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="mixes or drops the batch dimension"):
        auto = fastgp.gradient_penalty(critic, real, fake, eps=eps)
    assert torch.equal(auto, fastgp.gradient_penalty(critic, real, fake, eps=eps,
                                                     method="autograd"))
    with pytest.raises(UnsupportedLayerError, match="mixes or drops the batch dimension"):
        fastgp.gradient_penalty(critic, real, fake, eps=eps, method="explicit")
