"""FusedCritic (Tier 2) against the fp64 oracle, Tier 1, and itself (micro-batches, lazy
regularization, torch.compile), plus its errors."""

import copy

import pytest
import torch
from backends import AVAILABLE, BACKENDS
from critics import DROPOUT_CRITICS
from helpers import FP32_TOL, FP64_TOL, parameter_gradients, relative_error
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fastgp
from fastgp import reference
from fastgp.models import dcgan_critic, resnet32_critic, toy_critic
from fastgp.nn import Residual
from fastgp.perf.counting import count

CRITICS = {
    "toy_mlp_relu": (lambda: toy_critic(2, 16), (2,)),
    "dcgan": (lambda: dcgan_critic(16, 3, 4), (3, 16, 16)),
    "resnet32": (lambda: resnet32_critic(4), (3, 32, 32)),
    "smooth_layernorm": (lambda: nn.Sequential(
        nn.Linear(6, 16), nn.LayerNorm(16), nn.SiLU(), nn.Linear(16, 16), nn.GELU(),
        nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1)), (6,)),
    "conv_groupnorm": (lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ELU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 8, 3, stride=2, groups=2), nn.Softplus(), nn.Flatten(), nn.Linear(8, 1)),
        (3, 8, 8)),
    "sequence_conv1d": (lambda: nn.Sequential(
        nn.Conv1d(4, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv1d(8, 8, 3, stride=2, dilation=2),
        nn.Sigmoid(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 1)), (4, 17)),
    "volume_conv3d": (lambda: nn.Sequential(
        nn.Conv3d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Unflatten(1, (4, 8)),
        nn.Flatten(), nn.Linear(32, 1)), (2, 4, 4, 4)),
    "residual_smooth": (lambda: nn.Sequential(
        nn.Linear(5, 8), Residual(nn.Sequential(nn.SiLU(), nn.Linear(8, 8)), nn.Linear(8, 8)),
        nn.LayerNorm(8), nn.Linear(8, 1)), (5,)),
}


def _build(name, dtype=torch.float64, seed=0):
    build, shape = CRITICS[name]
    torch.manual_seed(seed)
    return build().to(dtype), shape


def _inputs(shape, batch, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    real = torch.randn((batch, *shape), generator=generator, dtype=dtype)
    fake = torch.randn((batch, *shape), generator=generator, dtype=dtype)
    return real, fake, torch.rand(batch, generator=generator, dtype=dtype)


def _oracle(critic, real, fake, eps, penalty="gp", weight=10.0, center=1.0):
    """Loss, penalty, norms and parameter gradients of the canonical eager code, in fp64."""
    critic = copy.deepcopy(critic).double()
    real, fake, eps = real.double(), fake.double(), eps.double()
    w_loss = critic(fake).mean() - critic(real).mean()
    if penalty in ("gp", "lp"):
        value, norms = reference.gradient_penalty(critic, real, fake, eps, weight, center,
                                                  one_sided=penalty == "lp")
    elif penalty in ("r1", "r2"):
        value, norms = reference.r1_penalty(critic, real if penalty == "r1" else fake, weight)
    else:
        value, norms = torch.zeros((), dtype=torch.float64), None
    loss = w_loss + value
    return loss.detach(), value.detach(), norms, parameter_gradients(loss, critic)


def _fused(critic, real, fake, eps, backend=None, **options):
    result = fastgp.FusedCritic(critic, backend=backend).step(real, fake, eps=eps, **options)
    return result, [p.grad.clone() for p in critic.parameters()]


def _errors(result, grads, expected):
    loss, value, norms, expected_grads = expected
    errors = {"loss": relative_error(result.loss, loss),
              "penalty": relative_error(result.penalty, value),
              "parameter_gradients": relative_error(grads, expected_grads)}
    if norms is not None:
        errors["norms"] = relative_error(result.norms, norms)
    return errors


@pytest.mark.parametrize("name", list(CRITICS))
@pytest.mark.parametrize("batch", [1, 3])
def test_fused_step_matches_oracle_fp64(name, batch):
    critic, shape = _build(name)
    real, fake, eps = _inputs(shape, batch)
    result, grads = _fused(critic, real, fake, eps, backend="torch")
    errors = _errors(result, grads, _oracle(critic, real, fake, eps))
    assert max(errors.values()) <= FP64_TOL, errors


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["toy_mlp_relu", "dcgan", "smooth_layernorm"])
def test_fused_step_matches_oracle_on_every_backend(name, backend):
    critic, shape = _build(name)
    real, fake, eps = _inputs(shape, 5 if backend == "triton" else 257 if name != "dcgan" else 9)
    result, grads = _fused(critic, real, fake, eps, backend=backend)
    errors = _errors(result, grads, _oracle(critic, real, fake, eps))
    assert max(errors.values()) <= FP64_TOL, errors


@pytest.mark.parametrize("name", list(CRITICS))
def test_fused_step_fp32_within_tolerance_of_fp64_oracle(name):
    critic, shape = _build(name, torch.float32)
    real, fake, eps = _inputs(shape, 7, torch.float32)
    result, grads = _fused(critic, real, fake, eps)
    errors = _errors(result, grads, _oracle(critic, real, fake, eps))
    assert max(errors.values()) <= FP32_TOL, errors


@pytest.mark.parametrize("penalty,center", [("lp", 1.0), ("lp", 0.3), ("gp", 0.0), ("gp", 2.0),
                                            ("r1", 1.0), ("r2", 1.0), ("none", 1.0)])
@pytest.mark.parametrize("name", ["toy_mlp_relu", "residual_smooth"])
def test_penalty_variants_match_oracle(name, penalty, center):
    critic, shape = _build(name)
    real, fake, eps = _inputs(shape, 6)
    result, grads = _fused(critic, real, fake, eps, penalty=penalty, center=center, weight=3.0)
    expected = _oracle(critic, real, fake, eps, penalty, 3.0, center)
    errors = _errors(result, grads, expected)
    assert max(errors.values()) <= FP64_TOL, errors
    assert (result.norms is None) == (penalty == "none")


def _random_composition(seed: int) -> nn.Sequential:
    """A random critic from the supported layers (vector inputs of width 6)."""
    generator = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    activations = [lambda: nn.ReLU(), lambda: nn.LeakyReLU(0.2), lambda: nn.SiLU(),
                   lambda: nn.Tanh(), lambda: nn.GELU(), lambda: nn.ELU(), lambda: nn.Softplus(),
                   lambda: nn.LayerNorm(6), lambda: nn.Identity()]
    layers: list[nn.Module] = []
    for _ in range(int(torch.randint(1, 5, (1,), generator=generator))):
        kind = pick(["linear", "activation", "residual", "groupnorm"])
        if kind == "linear":
            layers.append(nn.Linear(6, 6))
        elif kind == "activation":
            layers.append(pick(activations)())
        elif kind == "groupnorm":
            layers += [nn.Unflatten(1, (3, 2)), nn.GroupNorm(3, 3), nn.Flatten()]
        else:
            layers.append(Residual(nn.Sequential(pick(activations)(), nn.Linear(6, 6)),
                                   pick([None, nn.Linear(6, 6)])))
    return nn.Sequential(*layers, pick(activations)(), nn.Linear(6, 1))


@pytest.mark.parametrize("seed", range(12))
def test_random_compositions_match_oracle(seed):
    torch.manual_seed(seed)
    critic = _random_composition(seed).double()
    real, fake, eps = _inputs((6,), 4, seed=seed)
    result, grads = _fused(critic, real, fake, eps)
    errors = _errors(result, grads, _oracle(critic, real, fake, eps))
    assert max(errors.values()) <= FP64_TOL, (critic, errors)


@pytest.mark.parametrize("name", ["dcgan", "smooth_layernorm"])
def test_fused_step_equals_tier1(name):
    critic, shape = _build(name)
    real, fake, eps = _inputs(shape, 5)
    result, grads = _fused(critic, real, fake, eps)
    penalty, norms = fastgp.gradient_penalty(critic, real, fake, eps=eps, return_norms=True)
    loss = critic(fake).mean() - critic(real).mean() + penalty
    assert relative_error(grads, parameter_gradients(loss, critic)) <= FP64_TOL
    assert relative_error(result.norms, norms) <= FP64_TOL


@pytest.mark.parametrize("name", ["toy_mlp_relu", "smooth_layernorm", "dcgan"])
@pytest.mark.parametrize("penalty", ["gp", "r1"])
def test_micro_batches_give_the_full_batch_result(name, penalty):
    critic, shape = _build(name)
    real, fake, eps = _inputs(shape, 10)
    full, full_grads = _fused(critic, real, fake, eps, penalty=penalty)
    chunked, chunked_grads = _fused(critic, real, fake, eps, penalty=penalty, micro_batch=3)
    assert relative_error(chunked_grads, full_grads) <= 1e-13
    assert relative_error(chunked.loss, full.loss) <= 1e-13
    assert relative_error(chunked.norms, full.norms) <= 1e-13


def test_micro_batches_bound_peak_memory():
    critic = toy_critic(2, 256)
    real, fake, eps = _inputs((2,), 2048, torch.float32)
    fused = fastgp.FusedCritic(critic)
    full, _ = count(lambda: fused.step(real, fake, eps=eps))
    chunked, _ = count(lambda: fused.step(real, fake, eps=eps, micro_batch=128))
    activation_bytes = 3 * 2048 * 256 * 4  # one hidden layer over all rows
    assert full.peak_bytes > 2 * activation_bytes
    assert chunked.peak_bytes < full.peak_bytes / 4


def test_lazy_regularization_applies_k_times_the_penalty_every_k_steps():
    critic, shape = _build("toy_mlp_relu")
    real, fake, eps = _inputs(shape, 6)
    fused = fastgp.FusedCritic(critic, penalty_every=3)
    results = []
    for _ in range(4):
        results.append((fused.step(real, fake, eps=eps, weight=2.0),
                        [p.grad.clone() for p in critic.parameters()]))
    expected_on = _oracle(critic, real, fake, eps, "gp", 6.0)
    expected_off = _oracle(critic, real, fake, eps, "none")
    for step, (result, grads) in enumerate(results):
        expected = expected_on if step % 3 == 0 else expected_off
        errors = _errors(result, grads, expected)
        assert max(errors.values()) <= FP64_TOL, (step, errors)


def test_result_fields_and_gradient_norm_statistics():
    critic, shape = _build("toy_mlp_relu")
    real, fake, eps = _inputs(shape, 8)
    result = fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    w = critic(real).mean() - critic(fake).mean()
    assert relative_error(result.wasserstein, w) <= FP64_TOL
    assert torch.allclose(result.loss, result.penalty - result.wasserstein)
    stats = result.norm_stats()
    assert stats["min"] <= stats["mean"] <= stats["max"]
    assert stats["mean"] == pytest.approx(float(result.norms.mean()))


def test_step_replaces_existing_gradients():
    critic, shape = _build("toy_mlp_relu")
    real, fake, eps = _inputs(shape, 4)
    for p in critic.parameters():
        p.grad = torch.full_like(p, 7.0)
    _, grads = _fused(critic, real, fake, eps)
    _, _, _, expected = _oracle(critic, real, fake, eps)
    assert relative_error(grads, expected) <= FP64_TOL


def test_channels_last_and_contiguous_formats_agree():
    critic, shape = _build("dcgan")
    real, fake, eps = _inputs(shape, 4)
    results = []
    for channels_last in (True, False):
        step = fastgp.FusedCritic(critic, channels_last=channels_last).step(real, fake, eps=eps)
        results.append([p.grad.clone() for p in critic.parameters()] + [step.loss])
    assert relative_error(results[0], results[1]) <= FP64_TOL


def _one_mask_per_forward_oracle(critic, real, fake, eps):
    """The step's forwards written with autograd, each drawing one mask over its rows: on the
    CPU the real rows, the fake rows, then ``x̂``. Returns the penalty and the parameter
    gradients of the loss."""
    x_hat = reference.interpolate(real, fake, eps).requires_grad_(True)
    real_scores, fake_scores = critic(real).reshape(-1), critic(fake).reshape(-1)
    penalty_scores = critic(x_hat).reshape(-1)
    value, _ = reference.norm_penalty(reference.input_gradient(x_hat, penalty_scores))
    loss = fake_scores.mean() - real_scores.mean() + value
    return value.detach(), parameter_gradients(loss, critic)


@pytest.mark.parametrize("name", list(DROPOUT_CRITICS))
def test_a_step_with_dropout_draws_one_mask_per_forward_over_its_rows(name):
    build, shape = DROPOUT_CRITICS[name]
    torch.manual_seed(0)
    critic = build().double()
    real, fake, eps = _inputs(shape, 5)
    torch.manual_seed(3)
    result, grads = _fused(critic, real, fake, eps)
    assert all(torch.isfinite(g).all() for g in grads)
    torch.manual_seed(3)
    value, expected = _one_mask_per_forward_oracle(critic, real, fake, eps)
    assert relative_error(result.penalty, value) <= FP64_TOL
    assert relative_error(grads, expected) <= FP64_TOL


def test_dropout_with_p_0_in_training_mode_steps_as_in_eval_mode():
    """p is read at every step, as the module's own forward reads it: setting it to 0 after
    the critic was read takes effect without a new reading."""
    build, shape = DROPOUT_CRITICS["mlp_dropout"]
    critic = build().double()
    real, fake, eps = _inputs(shape, 5)
    fused = fastgp.FusedCritic(critic)
    fused.step(real, fake, eps=eps)
    for module in critic.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    fused.step(real, fake, eps=eps)
    train = [p.grad.clone() for p in critic.parameters()]
    critic.eval()
    fused.step(real, fake, eps=eps)
    assert relative_error(train, [p.grad for p in critic.parameters()]) <= FP64_TOL


@pytest.mark.parametrize("backend", [b for b in AVAILABLE if b != "triton"])
def test_compiled_step_equals_eager_without_recompiling(backend):
    torch._dynamo.reset()
    critic = toy_critic(2, 32)
    fused = fastgp.FusedCritic(critic, backend=backend)
    frames = []

    def counting_backend(graph_module, example_inputs):
        frames.append(graph_module)
        return graph_module.forward

    def step(real, fake, eps):
        result = fused.step(real, fake, eps=eps)
        return result.loss, [p.grad for p in critic.parameters()]

    compiled = torch.compile(step, fullgraph=True, backend=counting_backend)
    for seed in range(3):
        real, fake, eps = _inputs((2,), 16, torch.float32, seed=seed)
        loss, grads = compiled(real, fake, eps)
        grads = [g.clone() for g in grads]
        eager_loss, eager_grads = step(real, fake, eps)
        assert relative_error(grads + [loss], eager_grads + [eager_loss]) <= 1e-6
    assert len(frames) == 1


@pytest.mark.parametrize("name,channels_last", [("dcgan", True), ("dcgan", False),
                                                  ("resnet32", True), ("conv_groupnorm", True)])
def test_conv_critic_steps_compile_in_one_graph_as_eager(name, channels_last):
    """4-D critics compile with fullgraph=True through Inductor, in both memory formats (a
    channels-last ``cat(out=)`` and fake kernels whose layouts differ from the real ones broke
    this before), and a second step reuses the graph."""
    torch._dynamo.reset()
    critic, shape = _build(name, torch.float32)
    fused = fastgp.FusedCritic(critic, channels_last=channels_last, backend="native"
                               if "native" in AVAILABLE else "torch")

    def step(real, fake, eps):
        result = fused.step(real, fake, eps=eps)
        return result.loss, [p.grad for p in critic.parameters()]

    compiled = torch.compile(step, fullgraph=True)
    for seed in range(2):
        real, fake, eps = _inputs(shape, 4, torch.float32, seed=seed)
        with torch._dynamo.config.patch(error_on_recompile=seed > 0):
            loss, grads = compiled(real, fake, eps)
        grads = [g.clone() for g in grads]
        eager_loss, eager_grads = step(real, fake, eps)
        assert relative_error(grads + [loss], eager_grads + [eager_loss]) <= FP32_TOL


class _DeviceSyncs(TorchDispatchMode):
    """Counts the ops that read a tensor's value on the host (a device sync on CUDA)."""

    SYNCING = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
               torch.ops.aten.equal.default)

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.SYNCING
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["toy_mlp_relu", "dcgan", "conv_groupnorm"])
def test_the_engine_step_and_the_drop_in_read_nothing_back_without_input_checks(name):
    """No host read in the hot path (each is a device sync on CUDA): the engine step and the
    drop-in penalty with its backward read no tensor value with ``check_inputs=False``; with the
    checks on, the two finiteness checks of ``real`` and ``fake`` are the only reads."""
    critic, shape = _build(name, torch.float32)
    real, fake, _ = _inputs(shape, 4, torch.float32)
    fused = fastgp.FusedCritic(critic)
    fused.step(real, fake, check_inputs=False)  # the first step reads the critic
    for check_inputs, expected in ((False, 0), (True, 2)):
        with _DeviceSyncs() as syncs:
            fused.step(real, fake, check_inputs=check_inputs)
        assert syncs.count == expected, (check_inputs, syncs.count)
        with _DeviceSyncs() as syncs:
            loss = critic(fake).mean() - critic(real).mean()
            loss = loss + fastgp.gradient_penalty(critic, real, fake, check_inputs=check_inputs)
            loss.backward()
        assert syncs.count == expected, (check_inputs, syncs.count)


def test_inductor_compiled_step_equals_eager():
    torch._dynamo.reset()
    critic = toy_critic(2, 16)
    fused = fastgp.FusedCritic(critic, backend="torch")

    def step(real, fake, eps):
        result = fused.step(real, fake, eps=eps)
        return result.loss, [p.grad for p in critic.parameters()]

    compiled = torch.compile(step, fullgraph=True)
    real, fake, eps = _inputs((2,), 8, torch.float32)
    loss, grads = compiled(real, fake, eps)
    grads = [g.clone() for g in grads]
    eager_loss, eager_grads = step(real, fake, eps)
    assert relative_error(grads + [loss], eager_grads + [eager_loss]) <= 1e-5


@pytest.mark.parametrize("layer,message", [
    (nn.BatchNorm1d(4), "mixes the samples"),
    (nn.AlphaDropout(0.1), "AlphaDropout"),
    (nn.FeatureAlphaDropout(0.1), "FeatureAlphaDropout"),
    (nn.Embedding(3, 4), "Embedding"),
])
def test_unsupported_layers_are_named_and_point_to_tier1(layer, message):
    critic = nn.Sequential(nn.Linear(4, 4), nn.Sequential(layer), nn.Linear(4, 1))
    with pytest.raises(fastgp.UnsupportedLayerError, match=message) as error:
        fastgp.FusedCritic(critic)
    assert "1.0" in str(error.value)  # the layer's name inside the critic
    if not isinstance(layer, nn.BatchNorm1d):
        assert "gradient_penalty" in str(error.value)


def test_a_sequential_with_its_own_forward_is_read_from_that_forward():
    class Doubling(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    critic = nn.Sequential(Doubling(nn.Linear(2, 1))).double()
    real, fake, eps = _inputs((2,), 4)
    _, _, _, expected = _oracle(critic, real, fake, eps)
    result, grads = _fused(critic, real, fake, eps)
    assert relative_error(grads, expected) <= FP64_TOL


def test_bad_arguments_raise_clear_errors():
    critic, shape = _build("toy_mlp_relu")
    real, fake, eps = _inputs(shape, 4)
    fused = fastgp.FusedCritic(critic)
    with pytest.raises(ValueError, match="unknown penalty"):
        fused.step(real, fake, penalty="wgan")
    with pytest.raises(ValueError, match="micro_batch"):
        fused.step(real, fake, micro_batch=0)
    with pytest.raises(ValueError, match="critic's dtype"):
        fused.step(real.float(), fake.float())
    with pytest.raises(ValueError, match="same shape|shape"):
        fused.step(real, fake[:3])
    with pytest.raises(ValueError, match="penalty_every"):
        fastgp.FusedCritic(critic, penalty_every=0)
    with pytest.raises(ValueError, match="one value per sample"):
        fastgp.FusedCritic(nn.Linear(2, 3).double()).step(real, fake)


OPTIMIZERS = {
    "adam_fused": lambda params: torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.9), fused=True),
    "adam_foreach": lambda params: torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.9), foreach=True),
    "sgd": lambda params: torch.optim.SGD(params, lr=1e-2, momentum=0.9),
}


def _updates_after_one_step(critic, grads, optimizer_name):
    """Parameter changes of one optimizer step on a copy of ``critic`` whose ``.grad`` are ``grads``."""
    critic = copy.deepcopy(critic)
    before = [p.detach().clone() for p in critic.parameters()]
    for parameter, grad in zip(critic.parameters(), grads, strict=True):
        parameter.grad = grad
    OPTIMIZERS[optimizer_name](critic.parameters()).step()
    return [p.detach() - b for p, b in zip(critic.parameters(), before, strict=True)]


@pytest.mark.parametrize("name", ["mlp", "dcgan32", "resnet32", "dcgan64"])
def test_one_optimizer_step_after_the_engine_equals_one_after_autograd(name):
    """Every ``.grad`` has its parameter's layout: optimizers that walk the raw storage (fused
    Adam) update the same elements as after autograd — on every benchmark critic."""
    from fastgp.perf.bench import CRITICS as BENCH_CRITICS

    spec = BENCH_CRITICS[name]
    torch.manual_seed(0)
    critic = spec.build().double()
    real, fake, eps = _inputs(spec.sample_shape, 2)
    fastgp.FusedCritic(critic).step(real, fake, eps=eps)
    engine_grads = [p.grad for p in critic.parameters()]
    for parameter, grad in zip(critic.parameters(), engine_grads, strict=True):
        assert (grad.stride(), grad.dtype, grad.device) == (
            parameter.stride(), parameter.dtype, parameter.device), name
    # autograd.grad returns raw gradients (a double backward gives conv weight gradients odd
    # strides); .backward() would store them in the parameter's layout, as done here.
    autograd_grads = [torch.empty_like(p).copy_(g) for p, g in
                      zip(critic.parameters(), _oracle(critic, real, fake, eps)[3], strict=True)]
    for optimizer_name in OPTIMIZERS:
        engine = _updates_after_one_step(critic, engine_grads, optimizer_name)
        autograd = _updates_after_one_step(critic, autograd_grads, optimizer_name)
        assert relative_error(engine, autograd) <= 1e-9, optimizer_name


@pytest.mark.parametrize("shape,architecture,width", [
    ((1, 8, 8), "dcgan", None),      # digits with the defaults
    ((3, 16, 16), "dcgan", 8),       # an RGB image folder
    ((3, 32, 32), "resnet", 8),
])
def test_the_trainers_image_critic_step_and_optimizer_match_autograd(shape, architecture, width):
    """End to end on the trainer's own pieces for image data: its critic, its fused Adam and its
    engine critic step give the update of its autograd critic step (fp64)."""
    from fastgp.train import TrainConfig
    from fastgp.train.networks import build_models
    from fastgp.train.objectives import Objectives
    from fastgp.train.trainer import _optimizer

    updates = {}
    for path in ("engine", "tier1"):
        config = TrainConfig(critic_step=path, lr=1e-3, architecture=architecture,
                             width=width).resolved("image", shape[0])
        torch.manual_seed(0)
        critic = build_models(config, shape)[1].double()
        objectives = Objectives(critic, config)
        assert (objectives.engine is not None) == (path == "engine")
        optimizer = _optimizer(critic.parameters(), config)
        before = [p.detach().clone() for p in critic.parameters()]
        real, fake, eps = _inputs(shape, 3)
        objectives.critic_step(real, fake, True, eps=eps)
        optimizer.step()
        updates[path] = [p.detach() - b for p, b in zip(critic.parameters(), before, strict=True)]
    assert relative_error(updates["engine"], updates["tier1"]) <= 1e-9


def test_parameters_is_a_method_in_the_order_of_the_penalty_gradients():
    critic, shape = _build("dcgan", torch.float64)
    fused = fastgp.FusedCritic(critic)
    assert [id(p) for p in fused.parameters()] == [id(p) for p in critic.parameters()]
    real, fake, _ = _inputs(shape, 3)
    _, _, grads = fused.penalty_gradients(real, "gp", 10.0)
    assert [g.shape if g is not None else p.shape for p, g in zip(fused.parameters(), grads,
                                                                   strict=True)] == \
        [p.shape for p in critic.parameters()]
