"""The Sobol-then-TPE sampler: its exploration points, its hand-over, no state between trials."""

from __future__ import annotations

import math

import optuna
import pytest
from scipy.stats import qmc

from studies.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER, PRUNERS, SAMPLERS, make_sampler
from studies.sobol_tpe import SobolThenTPESampler


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 1e-4, 1.0, log=True)
    y = trial.suggest_float("y", -1.0, 1.0)
    return (math.log10(x) + 2) ** 2 + y**2


def test_the_exploration_phase_walks_one_scrambled_sobol_sequence():
    study = optuna.create_study(sampler=SobolThenTPESampler(n_startup_trials=6, seed=3))
    study.optimize(objective, n_trials=6)
    # Trial 0 has no completed trial to take the space from: drawn at random. Then point i of the
    # sequence for trial i, in sorted parameter order (x, y).
    points = qmc.Sobol(d=2, scramble=True, seed=3).random(8)
    for trial in study.trials[1:]:
        u_x, u_y = points[trial.number]
        assert trial.params["x"] == pytest.approx(10 ** (-4 + 4 * u_x))
        assert trial.params["y"] == pytest.approx(-1 + 2 * u_y)


def test_tpe_takes_over_after_the_startup_trials():
    seeded = SobolThenTPESampler(n_startup_trials=4, seed=0)
    study = optuna.create_study(sampler=seeded)
    study.optimize(objective, n_trials=8)
    points = qmc.Sobol(d=2, scramble=True, seed=0).random(8)
    later = study.trials[4:]
    assert all(t.params["y"] != pytest.approx(-1 + 2 * points[t.number][1]) for t in later), (
        "trials past the start-up phase must not be Sobol points"
    )


def test_a_fresh_sampler_per_trial_makes_the_same_choices_as_one_sampler():
    # Workers build a sampler per trial; the choices depend on (seed, trial number, history) only.
    one = optuna.create_study(sampler=SobolThenTPESampler(n_startup_trials=3, seed=7))
    one.optimize(objective, n_trials=7)
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="s")
    for _ in range(7):
        study = optuna.load_study(
            storage=storage, study_name="s", sampler=SobolThenTPESampler(n_startup_trials=3, seed=7)
        )
        study.optimize(objective, n_trials=1)
    assert [t.params for t in study.trials] == [t.params for t in one.trials]


def test_enqueued_trials_take_the_first_numbers_and_shorten_exploration():
    study = optuna.create_study(sampler=SobolThenTPESampler(n_startup_trials=4, seed=1))
    study.enqueue_trial({"x": 0.01, "y": 0.0})
    study.enqueue_trial({"x": 0.1, "y": 0.5})
    study.optimize(objective, n_trials=4)
    assert study.trials[0].params == {"x": 0.01, "y": 0.0}
    assert study.trials[1].params == {"x": 0.1, "y": 0.5}
    points = qmc.Sobol(d=2, scramble=True, seed=1).random(4)
    for trial in study.trials[2:]:
        assert trial.params["y"] == pytest.approx(-1 + 2 * points[trial.number][1])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_startup_trials"):
        SobolThenTPESampler(n_startup_trials=-1)
    with pytest.raises(ValueError, match="'seed'"):
        SobolThenTPESampler(tpe_options={"seed": 1})


def test_the_defaults_are_registered_names():
    assert DEFAULT_SAMPLER in SAMPLERS
    assert DEFAULT_PRUNER in PRUNERS
    assert isinstance(make_sampler("sobol_tpe", seed=0), SobolThenTPESampler)
