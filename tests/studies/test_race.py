"""The confirmation race on known seeds: who stops when and why, ties within the margin, pairs
not separable within the cap, the error spending, and the choice of configs to confirm."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from studies.verdict import (
    Race,
    RaceDesign,
    SearchTrial,
    configs_to_confirm,
    default_equivalence,
    judge_race,
    race_design,
    race_sentence,
)

DESIGN = RaceDesign(equivalence=0.005)
M = 3  # pairs of three optimizers


def _seeds(mean: float, sd: float, n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, sd, n))


# -- the design -----------------------------------------------------------------------------


def test_error_spending_sums_to_alpha_over_the_looks():
    spent = DESIGN.spent()
    assert len(spent) == 4
    assert math.fsum(spent) == pytest.approx(0.05, abs=1e-15)
    assert all(a < b for a, b in itertools.pairwise(spent))  # little early, most late
    # Lan-DeMets O'Brien-Fleming type: f(t) = 2 - 2 Phi(z_{0.975} / sqrt(t)), t = seeds / 10.
    z = stats.norm.ppf(0.975)
    assert spent[0] == pytest.approx(2 - 2 * stats.norm.cdf(z / math.sqrt(0.3)), rel=1e-9)
    assert spent[0] + spent[1] == pytest.approx(2 - 2 * stats.norm.cdf(z / math.sqrt(0.5)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"equivalence": -0.1},
        {"equivalence": math.nan},
        {"equivalence": 0.005, "looks": (1, 5)},
        {"equivalence": 0.005, "looks": (5, 3)},
        {"equivalence": 0.005, "alpha": 0.0},
    ],
)
def test_bad_designs_are_refused(kwargs):
    with pytest.raises(ValueError):
        RaceDesign(**kwargs)


# -- who stops when ---------------------------------------------------------------------------


def test_a_clearly_worse_optimizer_stops_at_the_first_look():
    values = {
        "adam": [0.9770, 0.9772, 0.9768],
        "sgd": [0.9771, 0.9769, 0.9770],
        "gd": [0.8800, 0.8801, 0.8799],
    }
    race = judge_race(values, "maximize", DESIGN)
    gd = race.optimizers["gd"]
    assert (gd.status, gd.stopped_at_seeds) == ("worse", 3)
    assert "stopped after 3 seeds: worse than" in gd.reason
    assert race.pair("adam", "gd").outcome == "better"
    assert race.pair("adam", "gd").a == "adam"
    assert race.next_seeds["gd"] == 0


def test_equal_optimizers_with_tiny_spread_are_tied_within_the_margin():
    values = {
        "adam": [0.97700, 0.97702, 0.97698],
        "sgd": [0.97701, 0.97699, 0.97700],
        "momentum": [0.97699, 0.97701, 0.97702],
    }
    race = judge_race(values, "maximize", DESIGN)
    assert {p.outcome for p in race.pairs} == {"tied"}
    assert race.settled and race.winner is None
    assert set(race.leaders) == {"adam", "sgd", "momentum"}
    assert all(o.status == "leader" and o.stopped_at_seeds == 3 for o in race.optimizers.values())
    assert race.next_seeds == {"adam": 0, "sgd": 0, "momentum": 0}
    sentence = race_sentence(race, "val_accuracy")
    assert "Tied within the margin of ±0.005 val_accuracy" in sentence


def test_a_pair_never_separable_ends_not_separable_at_the_cap():
    # Means 0.004 apart (within noise, not provably within the margin 0.005): never decided.
    a = [0.970, 0.990, 0.960, 0.985, 0.975, 0.965, 0.980, 0.972, 0.978, 0.975]
    b = [v - 0.004 for v in a[5:] + a[:5]]
    race = judge_race({"a": a, "b": b}, "maximize", DESIGN)
    pair = race.pair("a", "b")
    assert pair.outcome == "not_separable"
    assert pair.decided_at == 10
    assert race.settled and set(race.leaders) == {"a", "b"}
    assert all(o.stopped_at_seeds == 10 for o in race.optimizers.values())
    assert "cap of 10 seeds" in race.optimizers["a"].reason
    assert (
        "Not separable within the cap of 10 seeds (neither better nor within the margin of "
        "±0.005 value): a with b"
    ) in race_sentence(race)


def test_the_race_goes_on_only_where_the_answer_is_open():
    values = {
        "adam": _seeds(0.977, 0.003, 5, 1),
        "sgd": _seeds(0.977, 0.003, 5, 2),
        "gd": [0.90, 0.9001, 0.8999, 0.9002, 0.8998],
    }
    race = judge_race(values, "maximize", DESIGN)
    assert race.looks_done == 2 and not race.settled
    assert race.optimizers["gd"].status == "worse"
    assert race.optimizers["adam"].status == race.optimizers["sgd"].status == "racing"
    assert race.next_seeds == {"adam": 2, "sgd": 2, "gd": 0}
    assert "Race on: adam and sgd get seeds up to 7" in race_sentence(race)


def test_before_the_first_look_nothing_is_decided():
    race = judge_race({"adam": [0.97, 0.98], "sgd": [0.5]}, "maximize", DESIGN)
    assert race.looks_done == 0 and not race.settled
    assert race.next_seeds == {"adam": 1, "sgd": 2}
    assert {p.outcome for p in race.pairs} == {"open"}


def test_extra_seeds_past_a_stop_are_ignored():
    gd = [0.8800, 0.8801, 0.8799]
    others = {"adam": _seeds(0.977, 0.0003, 10, 3), "sgd": _seeds(0.977, 0.0003, 10, 4)}
    short = judge_race({**others, "gd": gd}, "maximize", DESIGN)
    longer = judge_race({**others, "gd": gd + [0.99] * 7}, "maximize", DESIGN)
    assert short.optimizers["gd"].stopped_at_seeds == 3
    assert short.pairs == longer.pairs
    assert short.optimizers["gd"].mean == longer.optimizers["gd"].mean


def test_minimize_stops_the_highest_loss():
    values = {"adam": [0.100, 0.101, 0.099], "sgd": [0.400, 0.401, 0.399]}
    race = judge_race(values, "minimize", RaceDesign(equivalence=0.001))
    assert race.optimizers["sgd"].status == "worse"
    assert race.winner == "adam" and race.settled


# -- unequal n, failed seeds -----------------------------------------------------------------


def test_failed_seeds_count_towards_the_look_and_leave_unequal_n():
    values = {
        "adam": [0.9770, None, 0.9772, 0.9768, 0.9771],
        "sgd": [0.9771, 0.9769, 0.9770, 0.9770, 0.9769],
        "gd": [0.8800, 0.8801, None, 0.8799, 0.8802],
    }
    race = judge_race(values, "maximize", DESIGN)
    # Look 1 (3 seeds each): adam and gd have 2 finished seeds, enough to stop gd.
    gd = race.pair("adam", "gd")
    assert (gd.outcome, gd.seeds, gd.decided_at) == ("better", (2, 2), 3)
    assert race.optimizers["gd"].stopped_at_seeds == 3
    # Look 2 (5 seeds each): adam's 4 finished against sgd's 5, tied.
    tied = race.pair("adam", "sgd")
    assert (tied.outcome, sorted(tied.seeds), tied.decided_at) == ("tied", [4, 5], 5)
    assert (race.optimizers["adam"].seeds, race.optimizers["adam"].finished) == (5, 4)
    assert race.settled


def test_an_optimizer_whose_seeds_all_fail_is_never_a_leader():
    values = {"adam": _seeds(0.977, 0.0001, 10, 5), "broken": [None] * 10}
    race = judge_race(values, "maximize", DESIGN)
    assert race.settled
    assert race.optimizers["broken"].status == "no_seeds"
    assert race.pair("adam", "broken").outcome == "not_separable"
    assert race.leaders == ["adam"] and race.winner is None  # nothing it was compared with


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="finite"):
        judge_race({"adam": [0.9, math.nan, 0.9], "sgd": [0.9] * 3}, "maximize", DESIGN)


# -- determinism, JSON -----------------------------------------------------------------------


def test_the_same_values_give_the_same_race():
    values = {f"o{i}": _seeds(0.977, 0.003, 10, 10 + i) for i in range(5)}
    assert judge_race(values, "maximize", DESIGN) == judge_race(values, "maximize", DESIGN)


def test_json_round_trip():
    values = {
        "adam": _seeds(0.977, 0.003, 7, 20),
        "sgd": _seeds(0.977, 0.003, 7, 21),
        "gd": [0.88, 0.8801, 0.8799, 0.88, 0.88],
    }
    race = judge_race(values, "maximize", DESIGN)
    text = json.dumps(race.to_json())
    assert Race.from_json(json.loads(text)) == race


# -- the error rate, simulated ---------------------------------------------------------------


def test_equal_optimizers_are_rarely_called_worse():
    rng = np.random.default_rng(0)
    design = RaceDesign(equivalence=1.0)  # in seed standard deviations
    false = 0
    for _ in range(200):
        values = {f"o{i}": list(rng.normal(0.0, 1.0, 10)) for i in range(8)}
        race = judge_race(values, "maximize", design)
        false += any(o.status == "worse" for o in race.optimizers.values())
    assert false / 200 <= 0.05


# -- the margin, the configs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "values", "direction", "margin"),
    [
        ("val_accuracy", [0.97, 0.95], "maximize", 0.005),
        ("top1_acc", [0.5], "maximize", 0.005),
        ("val_accuracy", [97.0, 95.0], "maximize", 0.97),  # percent: relative
        ("val_loss", [0.30, 0.25, 0.40], "minimize", 0.0025),
        ("val_mse", [-2.0, 3.0], "maximize", 0.03),
        ("loss", [0.0, 1.0], "minimize", 0.0),
        ("accumulated_loss", [0.5], "minimize", 0.005),
    ],
)
def test_default_equivalence(metric, values, direction, margin):
    assert default_equivalence(metric, values, direction) == pytest.approx(margin)


def test_second_config_only_when_the_search_cannot_tell_them_apart():
    trials = [
        SearchTrial(0.9721, {"lr": 0.01}),
        SearchTrial(0.9721, {"lr": 0.01}),  # the same config again: not a second one
        SearchTrial(0.9700, {"lr": 0.03}),
        SearchTrial(0.9600, {"lr": 0.3}),
    ]
    choice = configs_to_confirm(trials, "maximize", 0.005)
    assert choice.confirm == (0, 2)
    assert choice.gap == pytest.approx(0.0021)
    assert choice.noise == 0.0
    far = configs_to_confirm(trials, "maximize", 0.001)
    assert far.confirm == (0,) and "beyond" in far.reason


def test_the_searchs_own_noise_widens_the_threshold():
    trials = [
        SearchTrial(0.970, {"lr": 0.01}),
        SearchTrial(0.960, {"lr": 0.01}),
        SearchTrial(0.955, {"lr": 0.1}),
    ]
    choice = configs_to_confirm(trials, "maximize", 0.005)
    # repeats 0.970 and 0.960: s = 0.00707, threshold 2 sqrt(2) s = 0.02
    assert choice.noise == pytest.approx(0.01 / math.sqrt(2))
    assert choice.threshold == pytest.approx(0.02)
    assert choice.confirm == (0, 2)


def test_one_config_when_the_search_found_only_one():
    choice = configs_to_confirm([SearchTrial(0.3, {"lr": 0.1})], "minimize", 0.01)
    assert choice.confirm == (0,) and choice.gap is None


def test_the_design_from_a_request():
    assert race_design({}, "val_accuracy", [0.97], "maximize") == RaceDesign(0.005)
    chosen = race_design({"equivalence": 0.002, "looks": [4, 8]}, "val_loss", [0.3], "minimize")
    assert chosen == RaceDesign(0.002, (4, 8))
    with pytest.raises(ValueError):
        race_design({"equivalence": -1}, "val_loss", [0.3], "minimize")


def test_a_real_difference_smaller_than_the_margin_is_a_tie():
    # 0.0002 apart with almost no spread: different beyond noise, yet well within ±0.005.
    values = {
        "adam": [0.97720, 0.97721, 0.97719],
        "sgd": [0.97700, 0.97701, 0.97699],
    }
    race = judge_race(values, "maximize", DESIGN)
    pair = race.pair("adam", "sgd")
    assert pair.p_difference is not None and pair.p_difference <= pair.level
    assert pair.outcome == "tied" and pair.a == "adam"
    assert race.winner is None and set(race.leaders) == {"adam", "sgd"}


def test_a_zero_margin_never_ties():
    values = {"adam": [0.977] * 10, "sgd": [0.977] * 10}
    race = judge_race(values, "maximize", RaceDesign(equivalence=0.0))
    assert race.pair("adam", "sgd").outcome == "not_separable"
