"""bench/own_model.py on a tiny budget: the studies run through ``HPTClient.optimize`` against a
real API server, the product's figures it prints are the trainings' own, the fresh seeds are
trainings of the same code on seeds no study used, and the epochs it counts are the service's."""

from __future__ import annotations

import math
import statistics

import own_model
import pytest
from own_model import Run, StudyResult, Trained

from optim_core.registry import get_optimizer
from studies.verdict import decide

EPOCHS = 2


def test_tiny_run_through_the_client_and_a_real_server(tmp_path, capsys):
    argv = [
        *("--seeds", "3", "--n-trials", "2", "--top-k", "1", "--confirm-seeds", "2"),
        *("--fresh-seeds", "2", "--epochs", str(EPOCHS), "--n-train", "200", "--n-val", "100"),
        *("--workdir", str(tmp_path / "work"), "--reports", str(tmp_path / "reports")),
    ]
    [result] = own_model.main(argv)
    printed = capsys.readouterr().out

    assert result.seed == 3 and result.status == "completed"
    trained = result.trained
    # 2 search trials per optimizer, the best config of each on 2 seeds; what the objective ran
    # is what the service lists, trial for trial and epoch for epoch.
    assert trained.trials == {"search": 3 * 2, "confirm": 3 * 1 * 2}
    assert trained.epochs["confirm"] == 3 * 2 * EPOCHS  # never pruned
    assert result.service_trials == trained.trials
    assert result.service_epochs == trained.epochs
    assert {row.optimizer for row in result.rows} == set(own_model.OPTIMIZERS)

    data = own_model.make_data(200, 100)
    for row in result.rows:
        confirm = [
            run_
            for run_ in trained.runs
            if run_.phase == "confirm" and run_.optimizer == row.optimizer
        ]
        assert len({run_.seed for run_ in confirm}) == 2 and row.n == 2
        assert all(run_.params == row.params for run_ in confirm)
        # The product's confirmed figure is the mean of what this code trained on its seeds ...
        assert row.mean == pytest.approx(statistics.fmean(run_.value for run_ in confirm))
        # ... and training is deterministic given the seed, so the fresh figures are the same
        # training on other seeds: none of them a seed the study handed out.
        spec = get_optimizer(row.optimizer)
        again = own_model.train(
            data,
            lambda p, spec=spec, params=row.params: spec.build(p, params),
            row.params.get("batch_size"),
            confirm[0].seed,
            EPOCHS,
        )
        assert again == confirm[0].value
        assert len(row.fresh) == 2 and all(math.isfinite(v) for v in row.fresh)
    assert len(result.fresh_seeds) == 2 and not set(result.fresh_seeds) & trained.seeds
    fresh = decide({row.optimizer: row.fresh for row in result.rows}, "minimize")
    assert result.fresh_verdict is not None
    assert result.fresh_verdict.leaders == fresh.leaders

    assert f"  seed 3 (completed): {result.label}" in printed
    assert result.answer in printed
    assert f"verdict agreement: 1 of 1 seeds give {result.label}" in printed
    for row in result.rows:
        assert f"{row.optimizer:<9} product {row.mean:.4f} +- " in printed
    assert f"product {result.label}; fresh seeds {result.fresh_label}" in printed
    total = trained.epochs["search"] + trained.epochs["confirm"]
    assert f"total: {total} epochs = {trained.epochs['search']} search + " in printed
    page = (tmp_path / "reports" / "own-model-seed3.html").read_text()
    assert "own-model-seed3" in page and "val_loss" in page


def _result(product: dict[str, str], fresh: dict[str, list[float]]) -> StudyResult:
    rows = [
        own_model.OptimizerRow(name, {}, status, 3, 0.0, (None, None), fresh[name])
        for name, status in product.items()
    ]
    result = StudyResult(
        seed=0,
        name="x",
        status="completed",
        winner=None,
        leaders=[],
        answer="",
        rows=rows,
        trained=Trained(runs=[Run("sgd", "search", 0, {}, 0.0)]),
        seconds=0.0,
        service_epochs=Trained().epochs,
        service_trials=Trained().trials,
    )
    result.fresh_verdict = decide(fresh, "minimize")
    return result


def test_a_contradiction_is_an_order_reversed_beyond_noise_on_both_sides():
    low, high = [0.50, 0.51, 0.49], [0.90, 0.91, 0.89]
    reversed_ = _result({"adam": "best", "sgd": "worse"}, {"adam": high, "sgd": low})
    assert own_model.contradicts(reversed_) == [
        "sgd worse than adam in the product, the other way on fresh seeds"
    ]
    # A tie on the fresh seeds where the product saw a difference is less power, not the
    # opposite answer.
    tied = _result({"adam": "best", "sgd": "worse"}, {"adam": low, "sgd": [0.2, 0.5, 0.8]})
    assert own_model.contradicts(tied) == []
    assert tied.fresh_label == "tied{adam, sgd}"
    same = _result({"adam": "best", "sgd": "worse"}, {"adam": low, "sgd": high})
    assert own_model.contradicts(same) == [] and same.fresh_label == "adam"
