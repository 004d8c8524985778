"""The learning-rate range test: deterministic, sensible on a known problem, inside the space's
bounds, its cost counted in epochs, and what a study does with it."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from lr_range import (
    LR_RANGE_MODES,
    MAX_STEPS,
    Reference,
    centre_configs,
    centred_space,
    load_references,
    lr_range_test,
    reference,
    run_centred_study,
)

from optim_core import OPTIMIZERS
from optim_core.spaces import Float
from studies import run_study
from studies.tasks import get_task
from studies.tasks.base import TaskData
from studies.tasks.point import PointTask

GD, SGD, ADAM = OPTIMIZERS["gd"], OPTIMIZERS["sgd"], OPTIMIZERS["adam"]


def _space(spec, task, overrides=None):
    return spec.resolve_space(overrides, batch_size=task.batch_size_applies)


def test_same_seed_same_sweep_and_another_seed_another_batch_order():
    task = get_task("wine_mlp")
    first = lr_range_test(task, SGD, _space(SGD, task), seed=3)
    again = lr_range_test(task, SGD, _space(SGD, task), seed=3)
    other = lr_range_test(task, SGD, _space(SGD, task), seed=4)
    assert first == again
    assert first.losses != other.losses


class NoisyParabola(PointTask):
    """1/2 h (w - c)^2 with c the mean of a batch of standard normal draws: SGD is stable for
    lr < 2/h (best around 1/h, where one step lands on the batch's c) and diverges above."""

    name = "noisy_parabola"
    description = "a noisy parabola"
    default_epochs = 1

    def __init__(self, curvature: float) -> None:
        self.curvature = curvature

    def load_data(self) -> TaskData:
        noise = torch.randn(256, 1, generator=torch.Generator().manual_seed(0))
        x, y = torch.zeros(1, 1), torch.zeros(1)
        return TaskData(noise, torch.zeros(256), x, y, x, y)

    def start(self) -> torch.Tensor:
        return torch.full((1,), 3.0)

    def value(self, position: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.curvature * position.square().sum()

    def batch_loss(self, model, x, y):
        return 0.5 * self.curvature * (model() - x.mean(dim=0)).square().sum()


@pytest.mark.parametrize("curvature", [1.0, 100.0])
def test_on_a_parabola_it_suggests_an_order_below_the_divergent_lr(curvature):
    # Over four decades around the best lr 1/h, the sweep must stop past 2/h (divergence) and
    # suggest below the best lr, following h, not an end of the range.
    space = {"lr": Float(1e-3 / curvature, 10.0 / curvature, log=True)}
    sweep = lr_range_test(NoisyParabola(curvature), SGD, space, seed=0)
    assert sweep.diverged
    assert max(sweep.lrs) > 2.0 / curvature
    assert 0.05 / curvature <= sweep.lr <= 1.0 / curvature
    assert sweep.lr == sweep.valley


def test_sweep_and_suggestion_stay_inside_a_narrowed_lr_range():
    task = get_task("rosenbrock")
    space = _space(ADAM, task, {"lr": {"low": 1e-3, "high": 1e-2}})
    sweep = lr_range_test(task, ADAM, space, seed=0)
    assert sweep.lrs[0] == pytest.approx(1e-3)
    assert all(1e-3 * (1 - 1e-9) <= lr <= 1e-2 * (1 + 1e-9) for lr in sweep.lrs)
    assert 1e-3 <= sweep.lr <= 1e-2 and 1e-3 <= sweep.steepest <= 1e-2
    assert lr_range_test(task, ADAM, _space(ADAM, task, {"lr": 1e-3}), seed=0) is None


def test_its_cost_is_counted_in_epochs_of_the_task():
    rosenbrock = get_task("rosenbrock")  # no data: 50 steps an epoch
    sweep = lr_range_test(rosenbrock, SGD, _space(SGD, rosenbrock), seed=0, steps=10)
    assert sweep.epochs == pytest.approx(sweep.steps / rosenbrock.steps_per_epoch)
    wine = get_task("wine_mlp")  # batches of 32 of its training set
    sweep = lr_range_test(wine, SGD, _space(SGD, wine), seed=0, steps=10)
    assert sweep.steps == 10
    assert sweep.epochs == pytest.approx(10 * 32 / len(wine.data.split("train")[0]))
    full = lr_range_test(wine, GD, _space(GD, wine), seed=0, steps=10)  # one epoch a step
    assert full.epochs == full.steps
    assert MAX_STEPS <= 50  # a sweep stays a fraction of one trial on the built-in tasks


def test_centring_moves_the_lr_by_the_sweep_over_the_reference_and_narrows_inside_the_space():
    task = get_task("rosenbrock")
    sweep = lr_range_test(task, SGD, _space(SGD, task), seed=0)
    ref = Reference(lr=sweep.lr * 10, offset=0.5, tasks=("a",))
    moved = centre_configs([{"lr": 0.1, "batch_size": 32}, {"batch_size": 16}], sweep, ref)
    assert moved == [{"lr": pytest.approx(0.01), "batch_size": 32}, {"batch_size": 16}]
    space = centred_space(SGD.space, sweep, ref)
    dim = space["lr"]
    assert isinstance(dim, Float) and dim.log
    assert SGD.space["lr"].low <= dim.low < dim.high <= SGD.space["lr"].high
    centre = math.log10(sweep.lr) + 0.5
    assert math.log10(dim.high) == pytest.approx(min(centre + 1, 0.0), abs=0.01)


def test_the_shipped_references_cover_every_optimizer_and_leave_a_task_out():
    shipped = load_references()
    assert set(shipped) == set(OPTIMIZERS)
    full = reference(shipped["sgd"])
    held_out = reference(shipped["sgd"], exclude=("wine_mlp",))
    assert "wine_mlp" in full.tasks and "wine_mlp" not in held_out.tasks
    assert reference({}) is None


def test_a_study_centred_by_the_sweep_marks_its_warm_start_trials_lr_range():
    study = run_centred_study(
        "rosenbrock", "sgd", n_trials=2, epochs=2, warm_start=True, lr_range="both"
    )
    assert set(study.user_attrs["lr_range"]) == {"lr", "epochs"}
    origins = [t.user_attrs["origin"] for t in study.trials]
    assert origins == ["lr_range", "sampler"]
    plain = run_study("rosenbrock", "sgd", n_trials=1, epochs=2, warm_start=True)
    assert "lr_range" not in plain.user_attrs
    assert plain.trials[0].user_attrs["origin"] == "portfolio"
    assert set(LR_RANGE_MODES) == {"none", "portfolio", "space", "both"}
    with pytest.raises(ValueError, match="unknown lr_range"):
        run_centred_study("rosenbrock", "sgd", n_trials=1, lr_range="maybe")


optuna.logging.set_verbosity(optuna.logging.ERROR)
