"""bench/warm_start_transfer.py on known inputs: quantile regret with ties, FTE counting with
pruned trials, S10 and the bootstrap win rate on made-up data, the frozen suite's hash, and one
tiny run end to end."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import optuna
import pytest
from transfer import FROZEN_SHA256
from transfer.measure import Trace, quantile_regret, speedup, win_rate
from transfer.pools import draw_configs

from optim_core.registry import get_optimizer

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "warm_start_transfer", BENCH / "warm_start_transfer.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_the_test_suite_is_the_frozen_one():
    source = (BENCH / "transfer" / "tasks.py").read_bytes()
    assert hashlib.sha256(source).hexdigest() == FROZEN_SHA256


def test_quantile_regret_counts_ties_half_and_diverged_configs_as_worst():
    pool = [1.0, 2.0, 2.0, 3.0, None]
    # maximize: 3.0 is better, the two 2.0 tie.
    assert quantile_regret(2.0, pool, "maximize") == pytest.approx((1 + 0.5 * 2) / 5)
    # minimize: 1.0 is better; None (diverged) is never better.
    assert quantile_regret(2.0, pool, "minimize") == pytest.approx((1 + 0.5 * 2) / 5)
    assert quantile_regret(0.5, pool, "minimize") == 0.0
    assert quantile_regret(3.0, pool, "maximize") == pytest.approx(0.5 / 5)
    assert quantile_regret(None, pool, "maximize") == 1.0


def test_budget_counts_every_epoch_of_pruned_and_diverged_trials(bench):
    study = optuna.create_study(direction="maximize")
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    rows = [
        (optuna.trial.TrialState.COMPLETE, 0.5, {"epochs_run": 10}),
        (optuna.trial.TrialState.PRUNED, None, {"epochs_run": 3, "pruned_reason": "pruned"}),
        # Diverged in its second epoch: the epoch it started counts.
        (optuna.trial.TrialState.PRUNED, None, {"epochs_run": 1, "pruned_reason": "diverged: x"}),
        (optuna.trial.TrialState.COMPLETE, 0.7, {"epochs_run": 10}),
    ]
    for state, value, attrs in rows:
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params={"lr": 0.1},
                distributions=distributions,
                user_attrs=attrs,
            )
        )
    trace = bench.study_trace(study, full_epochs=10)
    assert list(trace.epochs) == [10, 3, 2, 10]
    assert trace.cumulative() == pytest.approx([1.0, 1.3, 1.5, 2.5])
    assert trace.spent == pytest.approx(2.5)
    assert trace.best_at(1.0) == 0.5
    assert trace.best_at(2.4) == 0.5  # the last trial ends past 2.4 FTE
    assert trace.best_at(3.0) == 0.7
    assert trace.best_at(0.5) is None
    assert trace.fte_to_reach(0.6) == pytest.approx(2.5)
    assert trace.fte_to_reach(0.8) is None


def test_s10_is_ten_over_the_median_fte_to_stocks_median_and_capped_when_never_reached():
    stock_at_10 = [0.8, 0.9, 0.7]  # maximize: the median is 0.8
    traces = [
        Trace([10, 10], [0.85, None], "maximize", 10),  # reaches 0.8 at 1 FTE
        Trace([10] * 5, [0.1, 0.2, 0.3, 0.4, 0.81], "maximize", 10),  # at 5 FTE
        Trace([10] * 12, [0.5] * 11 + [0.9], "maximize", 10),  # past 10 FTE: capped at 10
    ]
    result = speedup(stock_at_10, traces)
    assert result.target == 0.8
    assert result.fte == 5.0
    assert result.value == pytest.approx(2.0)
    assert result.capped
    assert speedup([None, None], traces) is None
    minimize = speedup([3.0, 1.0, 2.0], [Trace([10], [2.0], "minimize", 10)])
    assert minimize.target == 2.0 and minimize.value == 10.0 and not minimize.capped


def test_win_rate_pairs_by_seed_and_bootstraps_over_tasks():
    pairs = {"a": [(1.0, 0.0), (1.0, 0.0)], "b": [(0.0, 1.0), (0.5, 0.5)]}
    result = win_rate(pairs, {"a": "maximize", "b": "maximize"}, resamples=500)
    assert result.rate == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert result.comparisons == 4
    assert 0.25 <= result.low <= result.rate <= result.high <= 1.0
    # Resampling tasks: both "a" gives 1, both "b" gives 0.25.
    assert result.low == pytest.approx(0.25) and result.high == pytest.approx(1.0)
    everywhere = win_rate(
        {"a": [(1.0, 2.0)], "b": [(None, 0.0)]}, {"a": "minimize", "b": "maximize"}
    )
    assert everywhere.rate == 0.5 and everywhere.low == 0.0 and everywhere.high == 1.0
    # Against itself: every comparison a tie.
    same = win_rate({"a": [(0.3, 0.3)], "b": [(None, None)]}, {"a": "minimize", "b": "maximize"})
    assert (same.rate, same.low, same.high) == (0.5, 0.5, 0.5)


def test_pool_configs_are_drawn_over_the_whole_default_space():
    space = get_optimizer("adam").resolve_space()
    configs = draw_configs(space, 400, seed=1)
    lrs = [c["lr"] for c in configs]
    assert 1e-5 <= min(lrs) < 1e-4 and 1e-2 < max(lrs) <= 1e-1  # log-uniform: every decade
    assert sum(lr < 1e-3 for lr in lrs) == pytest.approx(200, abs=40)
    assert {c["batch_size"] for c in configs} == {16, 32, 64, 128, 256}
    assert all(0.5 <= c["beta1"] <= 0.999 for c in configs)
    assert configs == draw_configs(space, 400, seed=1)


def test_a_tiny_run_end_to_end(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        bench,
        "METHODS",
        {
            "product": bench.Method("tpe", "hyperband", True, 8),
            "stock": bench.Method("tpe", "hyperband", False, 8),
            "random": bench.Method("random", "none", False, 4),
        },
    )
    pools = tmp_path / "pools.json.gz"
    traces = tmp_path / "traces.json"
    args = [
        "--tasks",
        "heavy_tail_regression",
        "--optimizers",
        "adam",
        "--seeds",
        "2",
        "--workers",
        "1",
        "--pools-file",
        str(pools),
        "--pool-size",
        "8",
    ]
    bench.main([*args, "--save", str(traces)])
    first = capsys.readouterr().out
    assert "== test suite: 1 tasks x 1 optimizers x 2 seeds (heavy_tail_regression)" in first
    assert "6 studies (0 loaded)" in first
    for method in ("product", "stock", "random"):
        assert f"\n{method} " in first
    assert "heavy_tail_regression/adam" in first
    stored = bench.ensure_pools({}, [], frozen_sha256=FROZEN_SHA256, path=pools)
    assert len(stored["pools"]["heavy_tail_regression/adam"]["values"]) == 8
    assert stored["frozen_sha256"] == FROZEN_SHA256
    # The same studies, loaded: the same figures without training anything again.
    bench.main([*args, "--load", str(traces)])
    again = capsys.readouterr().out
    assert "6 studies (6 loaded)" in again
    assert first.split("== test suite")[1] == again.split("== test suite")[1]
