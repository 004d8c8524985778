"""Closed-form MLP gradients: autograd's numbers, the same training, and autograd for the rest."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optim_core import OPTIMIZERS
from studies import fast_mlp
from studies.fast_mlp import (
    ACTIVATIONS,
    ClosedFormMLP,
    FirstStepChecked,
    closed_form_for,
    declared_loss,
)
from studies.tasks import get_task
from studies.tasks.base import check_task
from studies.tasks.digits_mlp import DigitsMLP
from studies.tasks.supervised import ClassificationTask
from studies.training import flatten_parameters, train
from tests.studies.helpers import ADAM

ADAM_32 = {"lr": 1e-3, "batch_size": 32, **ADAM}

ONE_HIDDEN: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "leaky_relu_negative_slope": lambda: nn.LeakyReLU(-0.2),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
}


def _shared_activation() -> nn.Module:
    act = nn.Tanh()  # stateless: the same numbers wherever it is used
    return nn.Sequential(nn.Linear(7, 12), act, nn.Linear(12, 8), act, nn.Linear(8, 5))


MODELS: dict[str, Callable[[], nn.Module]] = {
    **{
        f"linear_{name}_linear": (
            lambda act=act: nn.Sequential(nn.Linear(7, 16), act(), nn.Linear(16, 5))
        )
        for name, act in ONE_HIDDEN.items()
    },
    "single_linear": lambda: nn.Linear(7, 5),
    "sequential_of_one_linear": lambda: nn.Sequential(nn.Linear(7, 5)),
    # an activation on the input, a layer without bias, activations in a row (in place, then out
    # of place), an identity, three layers, an activation on the output
    "deep_mixed": lambda: nn.Sequential(
        nn.Tanh(),
        nn.Linear(7, 9, bias=False),
        nn.ReLU(),
        nn.Sigmoid(),
        nn.Identity(),
        nn.Linear(9, 11),
        nn.GELU(),
        nn.Tanh(),
        nn.Linear(11, 5),
        nn.Sigmoid(),
    ),
    "two_hidden_relu": lambda: nn.Sequential(
        nn.Linear(7, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 5)
    ),
    "one_activation_module_used_twice": _shared_activation,
}

TOLERANCES = {
    torch.float64: {"rtol": 1e-12, "atol": 1e-15},
    torch.float32: {"rtol": 1e-5, "atol": 1e-7},
}


def test_every_registered_activation_is_checked_here():
    checked = {type(make()) for make in ONE_HIDDEN.values()}
    assert checked == set(ACTIVATIONS)


def _batch(
    closed: ClosedFormMLP, loss_kind: str, size: int, dtype: torch.dtype, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(size, closed.input_width, generator=gen, dtype=dtype)
    if loss_kind == "cross_entropy":
        y = torch.randint(0, closed.output_width, (size,), generator=gen)
    else:
        y = torch.randn(size, closed.output_width, generator=gen, dtype=dtype)
    return x, y


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("loss_kind", ["cross_entropy", "mse"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_closed_form_loss_and_gradients_equal_autograds(model_name, loss_kind, dtype):
    torch.manual_seed(0)
    model = MODELS[model_name]().to(dtype)
    closed = ClosedFormMLP.build(model, loss_kind)
    assert closed is not None
    reference = F.cross_entropy if loss_kind == "cross_entropy" else F.mse_loss
    gen = torch.Generator().manual_seed(1)
    # A full batch, a smaller last one (an odd size), the full size again: buffers per size.
    for size in (32, 13, 32):
        x, y = _batch(closed, loss_kind, size, dtype, gen)
        expected_loss = reference(model(x), y)
        expected = torch.autograd.grad(expected_loss, list(model.parameters()))
        for p in model.parameters():  # stale gradients are overwritten, not accumulated into
            if p.grad is not None:
                p.grad.fill_(math.nan)
        value = closed.loss(x, closed.train_targets(y))
        closed.backward()
        assert value == pytest.approx(expected_loss.item(), rel=TOLERANCES[dtype]["rtol"])
        for p, grad in zip(model.parameters(), expected, strict=True):
            assert p.grad is not None and p.grad.dtype == dtype
            torch.testing.assert_close(p.grad, grad, **TOLERANCES[dtype])


def test_closed_form_writes_into_the_flat_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 5))
    flat = flatten_parameters(list(model.parameters()))
    assert flat is not None
    closed = ClosedFormMLP.build(model, "cross_entropy")
    assert closed is not None
    x, y = torch.randn(8, 7), torch.randint(0, 5, (8,))
    expected = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    closed.loss(x, closed.train_targets(y))
    closed.backward()
    torch.testing.assert_close(flat.grad, torch.cat([g.reshape(-1) for g in expected]))
    for p in model.parameters():  # still views of the flat gradient
        assert p.grad.untyped_storage().data_ptr() == flat.grad.untyped_storage().data_ptr()


def test_the_weights_are_read_live_after_in_place_updates():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    closed = ClosedFormMLP.build(model, "mse")
    assert closed is not None
    x, y = torch.randn(5, 4), torch.randn(5, 3)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5).add_(0.1)
    assert closed.loss(x, y) == pytest.approx(F.mse_loss(model(x), y).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["digits_mlp", "wine_mlp", "diabetes_mlp", "breast_cancer_logreg"])
def test_the_plain_mlp_tasks_get_the_closed_form(name):
    task = get_task(name)
    closed = closed_form_for(task.build_model(), task)
    assert closed is not None
    assert closed.loss_kind == ("mse" if name == "diabetes_mlp" else "cross_entropy")


@pytest.mark.parametrize("name", ["digits_cnn", "rosenbrock", "noisy_quadratic"])
def test_other_tasks_keep_autograd(name):
    task = get_task(name)
    assert closed_form_for(task.build_model(), task) is None


class _SequentialSubclass(nn.Sequential):
    pass


class _LinearSubclass(nn.Linear):
    pass


def _with_forward_hook() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    model[0].register_forward_hook(lambda module, args, out: out * 2)
    return model


def _with_gradient_hook() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    model[2].weight.register_hook(lambda grad: grad * 2)
    return model


def _with_frozen_layer() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    model[0].weight.requires_grad_(False)
    return model


def _shared_linear() -> nn.Module:
    linear = nn.Linear(4, 4)
    return nn.Sequential(linear, nn.Tanh(), linear)


def _tied_weights() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    model[2].weight = model[0].weight
    return model


def _extra_parameter() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    model.register_parameter("scale", nn.Parameter(torch.ones(3)))
    return model


def _weight_not_a_parameter() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    weight = model[0].weight.detach().clone()
    del model[0].weight
    model[0].weight = weight  # a plain tensor: autograd leaves it alone
    return model


def _forward_replaced_on_instance() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    relu = model[1]
    relu.forward = lambda x: torch.relu(x) * 2
    return model


NOT_COVERED: dict[str, Callable[[], nn.Module]] = {
    "shared_linear": _shared_linear,
    "tied_weights": _tied_weights,
    "extra_parameter": _extra_parameter,
    "weight_not_a_parameter": _weight_not_a_parameter,
    "forward_replaced_on_instance": _forward_replaced_on_instance,
    "widths_do_not_chain": lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(5, 3)),
    "float16": lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).half(),
    "bfloat16": lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).bfloat16(),
    "rrelu_random_in_training": lambda: nn.Sequential(nn.Linear(4, 6), nn.RReLU(), nn.Linear(6, 3)),
    "alpha_dropout": lambda: nn.Sequential(nn.Linear(4, 6), nn.AlphaDropout(), nn.Linear(6, 3)),
    "dropout": lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)),
    "batch_norm": lambda: nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)),
    "unregistered_activation": lambda: nn.Sequential(nn.Linear(4, 6), nn.ELU(), nn.Linear(6, 3)),
    "log_softmax_layer": lambda: nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1)),
    "conv": lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 3)),
    "sequential_subclass": lambda: _SequentialSubclass(nn.Linear(4, 3)),
    "linear_subclass": lambda: nn.Sequential(_LinearSubclass(4, 3)),
    "no_linear": lambda: nn.Sequential(nn.ReLU()),
    "nested_sequential": lambda: nn.Sequential(nn.Sequential(nn.Linear(4, 3))),
    "forward_hook": _with_forward_hook,
    "gradient_hook": _with_gradient_hook,
    "frozen_layer": _with_frozen_layer,
    "mixed_dtypes": lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3).double()),
}


@pytest.mark.parametrize("name", sorted(NOT_COVERED))
def test_models_outside_the_plain_mlp_get_none(name):
    assert ClosedFormMLP.build(NOT_COVERED[name](), "cross_entropy") is None


def test_a_global_forward_hook_means_autograd():
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert ClosedFormMLP.build(nn.Linear(4, 3), "cross_entropy") is None
    finally:
        handle.remove()
    assert ClosedFormMLP.build(nn.Linear(4, 3), "cross_entropy") is not None


def test_an_unknown_loss_kind_gets_none():
    assert ClosedFormMLP.build(nn.Linear(4, 3), "hinge") is None


def test_build_touches_no_gradient():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    assert ClosedFormMLP.build(model, "mse") is not None
    assert all(p.grad is None for p in model.parameters())


def test_the_training_data_must_fit():
    closed = ClosedFormMLP.build(nn.Linear(4, 3), "cross_entropy")
    assert closed is not None
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    assert closed.accepts(x, y)
    assert not closed.accepts(x.double(), y)  # dtype of the weights
    assert not closed.accepts(torch.randn(6, 5), y)  # input width
    assert not closed.accepts(x.reshape(6, 2, 2), y)  # not rows of features
    assert not closed.accepts(x, torch.tensor([0, 1, 2, 3, 1, 0]))  # a class the model lacks
    assert not closed.accepts(x, torch.tensor([0, 1, -100, 2, 1, 0]))  # ignore_index: autograd
    assert not closed.accepts(x, F.one_hot(y, 3).float())  # class probabilities: autograd
    mse = ClosedFormMLP.build(nn.Linear(4, 1), "mse")
    assert mse is not None
    assert mse.accepts(x, torch.randn(6, 1))
    assert not mse.accepts(x, torch.randn(6))  # F.mse_loss would broadcast (6, 1) with (6,)


def test_the_declared_loss_must_describe_the_batch_loss():
    assert declared_loss(DigitsMLP()) == "cross_entropy"
    assert declared_loss(get_task("diabetes_mlp")) == "mse"
    assert declared_loss(get_task("rosenbrock")) is None

    class LabelSmoothing(DigitsMLP):
        def batch_loss(self, model, x, y):
            return F.cross_entropy(model(x), y, label_smoothing=0.1)

    class Redeclared(LabelSmoothing):
        loss_kind = "cross_entropy"

        def batch_loss(self, model, x, y):
            return F.cross_entropy(model(x), y)

    class Inherits(DigitsMLP):
        default_epochs = 3

    assert declared_loss(LabelSmoothing()) is None
    assert declared_loss(Redeclared()) == "cross_entropy"
    assert declared_loss(Inherits()) == "cross_entropy"
    patched = DigitsMLP()
    patched.batch_loss = lambda model, x, y: F.cross_entropy(model(x), y, label_smoothing=0.1)
    assert declared_loss(patched) is None
    task = LabelSmoothing()
    assert closed_form_for(task.build_model(), task) is None


def test_check_task_rejects_an_unknown_loss_kind():
    class Hinge(DigitsMLP):
        loss_kind = "hinge"

    with pytest.raises(ValueError, match="loss_kind"):
        check_task(Hinge())
    check_task(DigitsMLP())


def test_the_loop_takes_the_closed_form_when_it_applies(monkeypatch):
    calls = []
    original = ClassificationTask.batch_loss

    def counting(self, model, x, y):
        calls.append(len(y))
        return original(self, model, x, y)

    monkeypatch.setattr(ClassificationTask, "batch_loss", counting)
    task = get_task("wine_mlp")
    fast = train(task, OPTIMIZERS["adam"], ADAM_32, epochs=2, seed=0)
    assert calls == [ADAM_32["batch_size"]] and fast.steps > 0  # the first step's check only
    calls.clear()
    slow = train(task, OPTIMIZERS["adam"], ADAM_32, epochs=2, seed=0, closed_form=False)
    assert len(calls) == slow.steps == fast.steps


@pytest.mark.parametrize("name", ["digits_mlp", "diabetes_mlp"])
def test_closed_form_trains_like_autograd(name):
    task = get_task(name)
    fast, slow = (
        train(task, OPTIMIZERS["adam"], ADAM_32, epochs=3, seed=7, closed_form=closed)
        for closed in (True, False)
    )
    assert fast.steps == slow.steps and fast.stop_reason is slow.stop_reason is None
    for key, curve in fast.curves.items():
        assert curve == pytest.approx(slow.curves[key], rel=1e-5, abs=1e-7)
    expected = slow.model.state_dict()
    for key, value in fast.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)


def test_a_digits_mlp_trial_reaches_its_known_accuracy_on_the_closed_form():
    task = get_task("digits_mlp")
    fast, slow = (
        train(task, OPTIMIZERS["adam"], ADAM_32, epochs=20, seed=0, closed_form=closed)
        for closed in (True, False)
    )
    accuracy = fast.curves["val_accuracy"][-1]
    assert accuracy >= 0.97
    assert abs(accuracy - slow.curves["val_accuracy"][-1]) <= 2 / len(task.data.x_val)
    x, y = task.data.split("test")
    with torch.inference_mode():
        test_accuracy = (fast.model(x).argmax(dim=1) == y).float().mean().item()
    assert test_accuracy >= 0.96


def test_the_closed_form_is_deterministic_per_seed():
    task = get_task("digits_mlp")
    a, b, c = (
        train(task, OPTIMIZERS["sgd"], {"lr": 0.05, "batch_size": 32}, epochs=2, seed=seed)
        for seed in (3, 3, 4)
    )
    assert a.curves == b.curves != c.curves
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key])


@pytest.mark.parametrize(
    ("name", "lr"), [("digits_mlp", 50.0), ("digits_mlp", 5.0), ("diabetes_mlp", 1.0)]
)
def test_divergence_stops_the_closed_form_where_it_stops_autograd(name, lr):
    task = get_task(name)
    fast, slow = (
        train(
            task,
            OPTIMIZERS["sgd"],
            {"lr": lr, "batch_size": 32},
            epochs=3,
            seed=0,
            closed_form=closed,
        )
        for closed in (True, False)
    )
    assert fast.stop_reason is not None and fast.stop_reason.startswith("diverged: loss ")
    assert fast.stop_reason == slow.stop_reason
    assert fast.steps == slow.steps and fast.epochs_run == 0


class _MSETask:
    """What FirstStepChecked reads of a task: its name and its batch loss."""

    name = "mse_stub"

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(model(x), y)


class _Autograd:
    """The fallback: autograd into the parameters' gradients, counting its steps."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.steps, self._loss = model, 0, None

    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> float:
        self.model.zero_grad()
        self._loss = F.mse_loss(self.model(x), targets)
        return self._loss.item()

    def backward(self) -> None:
        self._loss.backward()
        self.steps += 1


def _stages_of(model: nn.Sequential) -> list:
    # What build() would make of the model if it let it through.
    return [fast_mlp._Linear(m) if type(m) is nn.Linear else ACTIVATIONS[type(m)](m) for m in model]


def test_the_first_step_check_catches_a_linear_layer_used_twice(caplog):
    torch.manual_seed(0)
    model = _shared_linear()
    closed = ClosedFormMLP(_stages_of(model), "mse")  # the closed form build() refuses
    fallback = _Autograd(model)
    checked = FirstStepChecked(closed, _MSETask(), model, fallback)
    x, y = torch.randn(16, 4), torch.randn(16, 4)
    expected_loss = F.mse_loss(model(x), y)
    expected = torch.autograd.grad(expected_loss, list(model.parameters()))
    with caplog.at_level(logging.WARNING, logger="studies.fast_mlp"):
        value = checked.loss(x, y)
        checked.backward()
    assert checked.agrees is False
    assert "disagree with autograd" in caplog.text and "mse_stub" in caplog.text
    assert value == expected_loss.item()
    for p, grad in zip(model.parameters(), expected, strict=True):
        assert torch.equal(p.grad, grad)  # autograd's gradients, not the closed form's
    checked.loss(x, y)
    checked.backward()
    assert fallback.steps == 1  # every later step goes through autograd


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_the_first_step_check_passes_every_covered_model(model_name, dtype, caplog):
    torch.manual_seed(0)
    model = MODELS[model_name]().to(dtype)
    closed = ClosedFormMLP.build(model, "mse")
    assert closed is not None
    checked = FirstStepChecked(closed, _MSETask(), model, _Autograd(model))
    x = 10 * torch.randn(64, closed.input_width, dtype=dtype)  # large activations, large sums
    y = torch.randn(64, closed.output_width, dtype=dtype)
    with caplog.at_level(logging.WARNING, logger="studies.fast_mlp"):
        checked.loss(x, y)
        checked.backward()
        checked.loss(x, y)
        checked.backward()
    assert checked.agrees is True and caplog.text == ""


def test_a_closed_form_that_disagrees_trains_exactly_like_autograd(monkeypatch, caplog):
    task = get_task("wine_mlp")
    original = ClosedFormMLP.backward

    def off_by_a_factor(self):  # a derivative gone wrong
        original(self)
        for stage in self.stages:
            if isinstance(stage, fast_mlp._Linear):
                stage.grad_weight.mul_(1.5)

    monkeypatch.setattr(ClosedFormMLP, "backward", off_by_a_factor)
    with caplog.at_level(logging.WARNING, logger="studies.fast_mlp"):
        checked = train(task, OPTIMIZERS["adam"], ADAM_32, epochs=2, seed=0)
    assert "wine_mlp" in caplog.text and "disagree with autograd" in caplog.text
    slow = train(task, OPTIMIZERS["adam"], ADAM_32, epochs=2, seed=0, closed_form=False)
    assert checked.curves == slow.curves and checked.steps == slow.steps
    for key, value in checked.model.state_dict().items():
        assert torch.equal(value, slow.model.state_dict()[key])
