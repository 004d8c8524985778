"""The training loop: flat parameters (same numbers), batching, divergence, time limits."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

import optim_core
from optim_core import OPTIMIZERS
from optim_core._base import BaseOptimizer
from studies.tasks import get_task
from studies.training import _bare_step, flatten_parameters, train
from tests.studies.helpers import ADAM

CONFIGS = {
    "gd": {"lr": 0.5},
    "sgd": {"lr": 0.05, "batch_size": 32},
    "momentum": {"lr": 0.01, "momentum": 0.9, "batch_size": 32},
    "nesterov": {"lr": 0.01, "momentum": 0.9, "batch_size": 64},
    "adagrad": {"lr": 0.01, "batch_size": 32},
    "rmsprop": {"lr": 1e-3, "alpha": 0.99, "batch_size": 32},
    "adam": {"lr": 1e-3, "batch_size": 32, **ADAM},
    "adamw": {"lr": 1e-3, "weight_decay": 0.01, "batch_size": 16, **ADAM},
}


def test_every_registered_optimizer_has_a_config_here():
    assert set(CONFIGS) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_flat_parameters_train_exactly_like_separate_tensors(name):
    task = get_task("digits_mlp")
    flat, separate = (
        train(task, OPTIMIZERS[name], CONFIGS[name], epochs=2, seed=7, flat=use_flat)
        for use_flat in (True, False)
    )
    assert flat.steps == separate.steps
    for key, curve in flat.curves.items():
        assert curve == pytest.approx(separate.curves[key], rel=1e-5, abs=1e-6)
    expected = separate.model.state_dict()
    for key, value in flat.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)


def test_the_trained_model_is_an_ordinary_module():
    task = get_task("digits_mlp")
    model = train(task, OPTIMIZERS["adam"], CONFIGS["adam"], epochs=1, seed=0).model
    assert all(isinstance(p, nn.Parameter) and p.is_leaf for p in model.parameters())
    fresh = task.build_model()
    fresh.load_state_dict(model.state_dict())
    x = task.data.x_test
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
        torch.testing.assert_close(copy.deepcopy(model)(x), model(x))


def test_flatten_parameters_shares_values_and_gradients():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    flat = flatten_parameters(list(model.parameters()))
    assert flat is not None and flat.numel() == sum(p.numel() for p in before)
    for p, value in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), value)
    model(torch.randn(5, 3)).square().sum().backward()
    assert flat.grad.abs().sum() > 0
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(flat.grad, expected)
    with torch.no_grad():
        flat.add_(1.0)
    for p, value in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), value + 1.0)


def test_flatten_parameters_declines_mixed_dtypes():
    params = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    assert flatten_parameters(params) is None
    assert flatten_parameters([]) is None


def test_gd_takes_one_full_batch_step_per_epoch():
    task = get_task("wine_mlp")
    n_train = len(task.data.x_train)
    gd = train(task, OPTIMIZERS["gd"], {"lr": 0.5}, epochs=4, seed=1)
    assert gd.steps == 4
    # The same as mini-batch SGD with one batch holding the whole training set.
    whole = train(task, OPTIMIZERS["sgd"], {"lr": 0.5, "batch_size": n_train}, epochs=4, seed=1)
    assert gd.curves == whole.curves


def test_mini_batches_cover_the_training_set_once_per_epoch():
    task = get_task("wine_mlp")
    n_train = len(task.data.x_train)
    result = train(task, OPTIMIZERS["sgd"], {"lr": 0.05, "batch_size": 16}, epochs=3, seed=0)
    assert result.steps == 3 * math.ceil(n_train / 16)
    assert result.epochs_run == 3 and result.stop_reason is None
    assert set(result.curves) == {"train_loss", "val_accuracy", "val_loss"}
    assert all(len(curve) == 3 for curve in result.curves.values())


def test_a_nan_or_infinite_loss_stops_at_once(parabola):
    # lr 50 on digits: the loss explodes within the first epoch.
    result = train(
        get_task("digits_mlp"), OPTIMIZERS["sgd"], {"lr": 50.0, "batch_size": 32}, epochs=5, seed=0
    )
    assert result.stop_reason is not None and result.stop_reason.startswith("diverged: loss ")
    assert result.stop_reason.endswith("at epoch 1")
    assert result.epochs_run == 0


def test_a_loss_1e3_times_the_first_stops_before_it_overflows(parabola):
    # gd with lr 1.5 on w^2 multiplies w by -2 each step: the loss by 4, past 1e3 x at step 6.
    result = train(parabola, OPTIMIZERS["gd"], {"lr": 1.5}, epochs=3, seed=0)
    assert result.stop_reason == "diverged: loss 1.02e+03 exceeds 1e3 x first loss (1) at epoch 1"
    assert result.steps == 5


def test_the_time_limit_stops_training():
    result = train(
        get_task("digits_mlp"),
        OPTIMIZERS["adam"],
        CONFIGS["adam"],
        epochs=20,
        seed=0,
        time_limit=1e-6,
    )
    assert result.stop_reason == "time limit 1e-06 s exceeded at epoch 1"
    assert result.epochs_run == 0 and result.steps == 0


def test_training_runs_on_one_thread_and_restores_the_caller_setting(parabola):
    seen: list[int] = []

    class Spy(type(parabola)):
        def batch_loss(self, model, x, y):
            seen.append(torch.get_num_threads())
            return super().batch_loss(model, x, y)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(Spy(), OPTIMIZERS["gd"], {"lr": 0.1}, epochs=1, seed=0)
        assert set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_the_epoch_callback_sees_every_epoch_and_can_stop():
    seen = []

    def on_epoch(epoch, metrics):
        seen.append((epoch, dict(metrics)))
        return "enough" if epoch == 2 else None

    result = train(
        get_task("wine_mlp"),
        OPTIMIZERS["adam"],
        {**CONFIGS["adam"], "lr": 1e-2},
        epochs=5,
        seed=0,
        on_epoch=on_epoch,
    )
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert result.stop_reason == "enough" and result.epochs_run == 2
    assert [metrics["val_accuracy"] for _, metrics in seen] == result.curves["val_accuracy"]


def test_initialisation_is_seeded_without_touching_the_global_generator():
    task = get_task("wine_mlp")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = train(task, OPTIMIZERS["sgd"], CONFIGS["sgd"], epochs=1, seed=5)
    assert torch.equal(torch.rand(3), expected)
    b = train(task, OPTIMIZERS["sgd"], CONFIGS["sgd"], epochs=1, seed=5)
    c = train(task, OPTIMIZERS["sgd"], CONFIGS["sgd"], epochs=1, seed=6)
    assert a.curves == b.curves != c.curves


def test_optimizer_step_hooks_still_fire_and_change_nothing():
    # The loop skips torch's step wrapper only while no step hook is registered.
    task = get_task("wine_mlp")
    calls = []
    handle = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: calls.append(type(opt).__name__)
    )
    try:
        hooked = train(task, OPTIMIZERS["adam"], CONFIGS["adam"], epochs=2, seed=0)
    finally:
        handle.remove()
    assert calls == ["Adam"] * hooked.steps
    bare = train(task, OPTIMIZERS["adam"], CONFIGS["adam"], epochs=2, seed=0)
    assert len(calls) == hooked.steps
    assert bare.curves == hooked.curves


def test_a_nan_validation_metric_stops_as_diverged(parabola):
    class NanOnValidation(type(parabola)):
        def evaluate(self, model, split):
            return {"loss": math.nan}

    result = train(NanOnValidation(), OPTIMIZERS["gd"], {"lr": 0.1}, epochs=3, seed=0)
    assert result.stop_reason == "diverged: loss is nan at epoch 1"
    assert result.epochs_run == 0 and result.curves == {"train_loss": [], "loss": []}


# What torch.optim.Optimizer.profile_hook_step's wrapper refers to (torch 2.13): a profiler label,
# the four hook registries, the wrapped step and the profiler's empty _optimizer_step_code. When
# torch changes it, the test below fails: read the new wrapper before updating this, and drop
# _bare_step if it now does something a step without hooks needs.
STEP_WRAPPER_NAMES = {
    "cast",
    "Optimizer",
    "__class__",
    "__name__",
    "torch",
    "autograd",
    "profiler",
    "record_function",
    "chain",
    "_global_optimizer_pre_hooks",
    "values",
    "_optimizer_step_pre_hooks",
    "isinstance",
    "tuple",
    "len",
    "RuntimeError",
    "_optimizer_step_code",
    "_optimizer_step_post_hooks",
    "_global_optimizer_post_hooks",
}


def _empty_method(self) -> None:
    """A docstring and nothing else, like Optimizer._optimizer_step_code."""


def test_the_bare_step_skips_nothing_but_torchs_hook_and_profiler_wrapper():
    def step(self, closure=None):
        return None

    wrapper = torch.optim.Optimizer.profile_hook_step(step)
    assert wrapper.__wrapped__ is step
    assert set(wrapper.__code__.co_names) == STEP_WRAPPER_NAMES
    assert wrapper.__code__.co_freevars == ("func",)
    step_code = torch.optim.Optimizer._optimizer_step_code.__code__
    assert step_code.co_code == _empty_method.__code__.co_code and not step_code.co_names
    opt = optim_core.Adam([nn.Parameter(torch.ones(3))])
    assert type(opt).step.hooked is True
    bare = _bare_step(opt)
    assert isinstance(bare, functools.partial)
    assert bare.func is BaseOptimizer.step and bare.args == (opt,)


def _no_hook(opt, args, kwargs):
    return None


# Each public way of registering a step hook, and so each registry _bare_step reads.
HOOK_REGISTRATIONS = {
    "instance_pre": lambda opt: opt.register_step_pre_hook(_no_hook),
    "instance_post": lambda opt: opt.register_step_post_hook(_no_hook),
    "global_pre": lambda opt: register_optimizer_step_pre_hook(_no_hook),
    "global_post": lambda opt: register_optimizer_step_post_hook(_no_hook),
}


@pytest.mark.parametrize("kind", sorted(HOOK_REGISTRATIONS))
def test_any_step_hook_means_the_ordinary_step(kind):
    opt = optim_core.Adam([nn.Parameter(torch.ones(3))])
    handle = HOOK_REGISTRATIONS[kind](opt)
    try:
        assert _bare_step(opt) == opt.step
    finally:
        handle.remove()
    assert isinstance(_bare_step(opt), functools.partial)


def test_a_step_set_on_the_instance_is_the_one_called():
    # An LR scheduler wraps the instance's step to count calls; skipping it would make the
    # scheduler warn that the optimizer never stepped.
    opt = optim_core.Adam([nn.Parameter(torch.ones(3))])
    torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    assert "step" in vars(opt)
    assert _bare_step(opt) is vars(opt)["step"]
