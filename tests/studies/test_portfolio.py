"""The portfolio: its greedy choice, leave-one-task-out scoring, and the shipped, validated data."""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest

from optim_core import OPTIMIZERS
from studies.tasks import BUILTIN_TASKS
from studies.warm_start import (
    Evaluations,
    PortfolioError,
    fit_to_space,
    greedy_portfolio,
    learn_portfolio,
    leave_one_task_out,
    load_evaluations,
    load_portfolio,
    parse_portfolio,
    rank_scores,
)
from studies.warm_start.learn import LEARNING_TASKS, candidates, portfolio_from


def test_rank_scores_share_ties_and_put_failures_last():
    assert rank_scores([0.9, 0.5, None, 0.9], "maximize") == [
        pytest.approx(2.5 / 3),
        pytest.approx(1 / 3),
        0.0,
        pytest.approx(2.5 / 3),
    ]
    assert rank_scores([3.0, 1.0, math.inf], "minimize") == [0.5, 1.0, 0.0]
    assert rank_scores([1.0], "minimize") == [1.0]


def test_greedy_portfolio_prefers_the_all_rounder_then_complements_it():
    scores = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.6], [0.9, 0.1]]
    assert greedy_portfolio(scores, 1) == [2]
    # After the all-rounder: the first candidate best on the first task lifts the mean most
    # (0.8 with either 0 or 1; ties go to the first).
    assert greedy_portfolio(scores, 3) == [2, 0, 1]
    assert greedy_portfolio(scores, 10) == [2, 0, 1, 3]
    assert greedy_portfolio([], 3) == []


def _toy() -> Evaluations:
    # Candidate 0 wins tasks a and b, candidate 1 wins c, candidate 2 is never best.
    return Evaluations(
        candidates=({"lr": 0.1}, {"lr": 0.01}, {"lr": 1.0}),
        values={"a": (0.9, 0.5, 0.1), "b": (0.8, 0.7, None), "c": (2.0, 1.0, 3.0)},
        directions={"a": "maximize", "b": "maximize", "c": "minimize"},
    )


def test_a_portfolio_learned_without_a_task_never_sees_it():
    assert learn_portfolio(_toy(), 1) == [{"lr": 0.1}]
    assert learn_portfolio(_toy(), 1, exclude=["a", "b"]) == [{"lr": 0.01}]
    with pytest.raises(ValueError, match="no task left"):
        learn_portfolio(_toy(), 1, exclude=["a", "b", "c"])


def test_leave_one_task_out_scores_each_prefix_on_the_unseen_task():
    curve = leave_one_task_out(_toy(), 2)
    # k=1: held-out a -> learned on b,c picks 0 (ties 1? b: 1.0 vs .5, c: .5 vs 1) -> first, 0:
    # score on a 1.0; held-out b -> 0 wins a, ties c... -> 0: 1.0; held-out c -> 0: 0.5.
    assert curve[0] == pytest.approx((1.0 + 1.0 + 0.5) / 3)
    assert curve[1] == pytest.approx(1.0)
    assert curve == sorted(curve)


def test_parse_portfolio_names_the_bad_entry():
    good = {"format": 1, "optimizers": {"adam": [{"lr": 1e-3, "beta1": 0.9}]}}
    assert parse_portfolio(good)["adam"][0]["beta1"] == 0.9
    bad_cases = [
        ({"format": 2, "optimizers": {}}, "format 1"),
        ({"format": 1, "optimizers": {"lion": []}}, "'lion' is not a registered optimizer"),
        ({"format": 1, "optimizers": {"adam": [{"momentum": 0.9}]}}, r"adam\[0\]: 'momentum'"),
        ({"format": 1, "optimizers": {"adam": [{"beta1": 1.0}]}}, r"adam\[0\]: beta1=1.0"),
        ({"format": 1, "optimizers": {"sgd": [{}]}}, "non-empty"),
        ({"format": 1, "optimizers": {"sgd": {"lr": 1}}}, "list of configs"),
    ]
    for raw, message in bad_cases:
        with pytest.raises(PortfolioError, match=message):
            parse_portfolio(raw)


def test_the_shipped_portfolio_covers_every_optimizer_and_fits_its_default_space():
    portfolio = load_portfolio()
    assert set(portfolio) == set(OPTIMIZERS)
    for name, configs in portfolio.items():
        assert configs, name
        for config in configs:
            fitted = fit_to_space(config, OPTIMIZERS[name].space)
            assert fitted is not None and fitted[0] == dict(config), (name, config)
    with pytest.raises(TypeError):
        portfolio["adam"] = ()  # type: ignore[index]


def test_the_shipped_portfolio_is_what_the_shipped_evaluations_give():
    evaluations = load_evaluations()
    assert set(evaluations) == set(OPTIMIZERS)
    for evaluation in evaluations.values():
        assert set(evaluation.values) == set(LEARNING_TASKS)
    assert set(BUILTIN_TASKS) - set(LEARNING_TASKS) == {"digits_cnn"}
    shipped = json.loads(
        resources.files("studies.warm_start").joinpath("evaluations.json").read_text()
    )
    size = len(next(iter(load_portfolio().values())))
    relearned = portfolio_from(shipped, size)
    assert {k: [dict(c) for c in v] for k, v in load_portfolio().items()} == relearned["optimizers"]


def test_candidates_are_spread_over_the_default_space_and_reproducible():
    first = candidates("adam", 16)
    assert first == candidates("adam", 16)
    lrs = sorted(c["lr"] for c in first)
    assert lrs[0] < 1e-4 and lrs[-1] > 1e-2  # both ends of the log range are explored
    for config in first:
        assert fit_to_space(config, OPTIMIZERS["adam"].space)[0] == config
