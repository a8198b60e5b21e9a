"""The engine reads a critic right or refuses it by name: reused and tied modules, subclasses,
hooks, reparametrized weights, and critics changed after they were wrapped (fp64 vs autograd)."""

import copy

import pytest
import torch
from helpers import FP64_TOL, relative_error
from torch import nn

import fastgp
from fastgp import reference
from fastgp.engine import UnsupportedLayerError


def _inputs(features=3, batch=5, seed=1):
    generator = torch.Generator().manual_seed(seed)
    real = torch.randn(batch, features, generator=generator, dtype=torch.float64)
    fake = torch.randn(batch, features, generator=generator, dtype=torch.float64)
    return real, fake, torch.rand(batch, generator=generator, dtype=torch.float64)


def _autograd_gradients(critic, real, fake, eps):
    """Every parameter's gradient of the canonical WGAN-GP critic loss (None where unused)."""
    critic = copy.deepcopy(critic)
    loss = critic(fake).mean() - critic(real).mean()
    loss = loss + reference.gradient_penalty(critic, real, fake, eps, 10.0)[0]
    parameters = [p for p in critic.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads, strict=True)]


def _engine_gradients(fused, critic, real, fake, eps):
    fused.step(real, fake, eps=eps)
    return [p.grad.clone() for p in critic.parameters() if p.requires_grad]


def _assert_engine_equals_autograd(fused, critic, seed=1):
    real, fake, eps = _inputs(seed=seed)
    expected = _autograd_gradients(critic, real, fake, eps)
    assert relative_error(_engine_gradients(fused, critic, real, fake, eps), expected) <= FP64_TOL


def _mlp(*layers):
    torch.manual_seed(0)
    return nn.Sequential(*layers).double()


def test_one_activation_object_used_twice_is_applied_twice():
    act = nn.LeakyReLU(0.2)
    critic = _mlp(nn.Linear(3, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 1))
    _assert_engine_equals_autograd(fastgp.FusedCritic(critic), critic)


def test_a_tied_layer_used_twice_gets_the_sum_of_both_uses():
    tied = nn.Linear(8, 8)
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), tied, nn.Tanh(), tied, nn.ReLU(), nn.Linear(8, 1))
    _assert_engine_equals_autograd(fastgp.FusedCritic(critic), critic)


class ScaledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class CallingReLU(nn.ReLU):
    def __call__(self, x):
        return super().__call__(x) + 1


@pytest.mark.parametrize("layer,words", [
    (ScaledLinear(8, 8), ["'2'", "ScaledLinear", "subclass of Linear", "overrides forward"]),
    (CallingReLU(), ["'2'", "CallingReLU", "subclass of ReLU", "overrides __call__"]),
])
def test_a_subclass_that_overrides_forward_is_refused_by_name(layer, words):
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), layer, nn.Linear(8, 1))
    with pytest.raises(UnsupportedLayerError) as error:
        fastgp.FusedCritic(critic)
    assert all(word in str(error.value) for word in words)


def test_a_forward_assigned_on_the_instance_is_refused():
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    critic[1].forward = lambda x: torch.relu(x) * 3
    with pytest.raises(UnsupportedLayerError, match="'1' .*own forward"):
        fastgp.FusedCritic(critic)


@pytest.mark.parametrize("register,kind", [
    (lambda m: m.register_forward_hook(lambda module, args, out: out * 2), "forward hook"),
    (lambda m: m.register_forward_pre_hook(lambda module, args: (args[0] * 2,)), "forward pre-hook"),
    (lambda m: m.register_full_backward_hook(lambda module, gi, go: None), "backward hook"),
])
def test_a_layer_with_a_hook_is_refused_at_wrapping_and_when_added_later(register, kind):
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    handle = register(critic[2])
    with pytest.raises(UnsupportedLayerError, match=f"'2' \\(Linear\\) has a {kind}"):
        fastgp.FusedCritic(critic)
    handle.remove()
    fused = fastgp.FusedCritic(critic)
    register(critic[0])
    real, fake, eps = _inputs()
    with pytest.raises(UnsupportedLayerError, match=f"'0' \\(Linear\\) has a {kind}"):
        fused.step(real, fake, eps=eps)


def test_a_global_module_hook_is_refused():
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, out: out)
    try:
        with pytest.raises(UnsupportedLayerError, match="global module forward hook"):
            fastgp.FusedCritic(critic)
    finally:
        handle.remove()
    fastgp.FusedCritic(critic)  # accepted again once the hook is gone


@pytest.mark.parametrize("wrap,words", [
    (torch.nn.utils.weight_norm, ["'0' (Linear)", "torch.nn.utils.weight_norm"]),
    (torch.nn.utils.parametrizations.weight_norm, ["'0' (ParametrizedLinear)", "parametrization"]),
])
def test_reparametrized_weights_are_refused_by_name(wrap, words):
    critic = _mlp(wrap(nn.Linear(3, 8)), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(UnsupportedLayerError) as error:
        fastgp.FusedCritic(critic)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_a_weight_that_is_not_a_parameter_is_refused_by_name():
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    weight = critic[2].weight.detach().clone()
    del critic[2].weight
    critic[2].weight = weight  # a plain tensor attribute: no parameter receives its gradient
    with pytest.raises(UnsupportedLayerError, match="'2' \\(Linear\\) uses a weight that is not"):
        fastgp.FusedCritic(critic)


@pytest.mark.parametrize("change", ["append", "replace", "insert"])
def test_a_layer_added_or_replaced_after_wrapping_is_read_again(change):
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    fused = fastgp.FusedCritic(critic)
    _assert_engine_equals_autograd(fused, critic)
    if change == "append":
        critic.append(nn.Tanh()).append(nn.Linear(1, 1).double())
    elif change == "replace":
        critic[3] = nn.SiLU()
    else:
        critic.insert(2, nn.Linear(8, 8).double())
    _assert_engine_equals_autograd(fused, critic, seed=2)


def test_a_weight_replaced_by_a_new_parameter_gets_the_gradient():
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    fused = fastgp.FusedCritic(critic)
    old = critic[0].weight
    fused.step(*_inputs()[:2])
    critic[0].weight = nn.Parameter(torch.randn(8, 3, dtype=torch.float64))
    _assert_engine_equals_autograd(fused, critic, seed=2)
    assert critic[0].weight.grad is not None
    assert old.grad is not critic[0].weight.grad


def test_a_layer_frozen_after_wrapping_gets_no_gradient_and_adam_leaves_it():
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    fused = fastgp.FusedCritic(critic)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    fused.step(*_inputs()[:2])
    optimizer.step()
    critic[0].requires_grad_(False)
    frozen = critic[0].weight.detach().clone()
    _assert_engine_equals_autograd(fused, critic, seed=2)
    assert critic[0].weight.grad is None and critic[0].bias.grad is None
    optimizer.step()
    assert torch.equal(critic[0].weight, frozen)


def test_train_eval_switch_and_unchanged_critic_reuse_the_reading():
    critic = _mlp(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    fused = fastgp.FusedCritic(critic)
    rule = fused.rule
    fused.step(*_inputs()[:2])
    assert fused.rule is rule  # nothing changed: no second reading
    critic.eval()
    fused.step(*_inputs()[:2])
    assert fused.rule is not rule


@pytest.mark.parametrize("activation", [nn.SiLU(inplace=True), nn.ELU(inplace=True),
                                        nn.ReLU(inplace=True), nn.LeakyReLU(0.2, inplace=True)])
def test_in_place_activations_do_not_overwrite_what_the_passes_differentiate_at(activation):
    critic = _mlp(nn.Linear(3, 8), activation, nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    _assert_engine_equals_autograd(fastgp.FusedCritic(critic), critic)
