"""bench/verdict_stability.py on a tiny budget: the studies run through the service, the counts
it prints are the trials' own, and the agreement it reports is the most common answer's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "verdict_stability.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verdict_stability", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_agreement_is_the_most_common_answer(bench):
    assert bench.agreement(["adam", "tied{adam, sgd}", "adam", "sgd", "adam"]) == (3, "adam")
    assert bench.agreement(["sgd", "adam"]) == (1, "sgd")
    assert bench.agreement([None, None]) == (0, None)


def test_tied_leaders_compare_as_a_set(bench):
    one = bench.answer_label("tied", None, ["nesterov", "adam", "rmsprop"])
    other = bench.answer_label("tied", None, ["rmsprop", "nesterov", "adam"])
    assert one == other == "tied{adam, nesterov, rmsprop}"
    assert bench.answer_label("winner", "adam", ["adam"]) == "adam"
    assert bench.answer_label("tied", None, ["adam", "sgd"]) != "adam"


def test_tiny_run_through_the_service(bench, tmp_path, capsys):
    argv = [
        *("--optimizers", "adam,gd", "--seeds", "0", "1", "--n-trials", "2", "--epochs", "2"),
        *("--top-k", "1", "--confirm-seeds", "2", "--jobs", "1"),
        *("--workdir", str(tmp_path), "--json", str(tmp_path / "out.json")),
    ]
    results = bench.main(argv)
    printed = capsys.readouterr().out

    assert [r.seed for r in results] == [0, 1]
    for r in results:
        assert r.status == "completed"
        assert r.search_trials == 2 * 2
        # top 1 config of each optimizer, on 2 fresh seeds, every epoch (no pruning there)
        assert r.confirm_trials == 2 * 1 * 2
        assert r.confirm_epochs == r.confirm_trials * 2
        assert 0 < r.search_epochs <= r.search_trials * 2
        assert r.outcome in ("winner", "tied")
        assert r.leaders and r.leaders[0] in ("adam", "gd")
        by_name = {o.optimizer: o for o in r.optimizers}
        assert all(o.n == 2 and o.config_rank == 1 and o.std is not None for o in by_name.values())
        best = max(o.search_best for o in by_name.values())
        assert by_name[r.single_winner].search_best == best
    count, answer = bench.agreement([r.verdict_answer for r in results])
    assert f"agreement with confirmation:    {count} of 2 seeds give {answer}" in printed
    search = sum(r.search_epochs for r in results)
    confirm = sum(r.confirm_epochs for r in results)
    assert f"confirmation cost: {confirm} epochs / {search} search epochs" in printed
    assert "gd among the leaders:" in printed
    assert (tmp_path / "out.json").read_text().count('"verdict_answer"') == 2
    # The saved figures print the same report again, without running anything.
    bench.main(["--from-json", str(tmp_path / "out.json")])
    assert capsys.readouterr().out == printed
    # The raw seeds are kept, and judging them again with the verdict code gives the service's
    # verdicts and figures; on one seed per config nothing is testable, so nothing can win.
    for r in results:
        assert sorted(c.optimizer for c in r.confirmed) == ["adam", "gd"]
        assert all(len(c.seeds) == 2 and c.seeds[0]["epochs"] == 2 for c in r.confirmed)
    again = bench.main(["--from-json", str(tmp_path / "out.json"), "--rejudge"])
    assert [(r.verdict_answer, r.confirm_epochs) for r in again] == [
        (r.verdict_answer, r.confirm_epochs) for r in results
    ]
    assert [o.mean for r in again for o in r.optimizers] == [
        o.mean for r in results for o in r.optimizers
    ]
    one = bench.main(["--from-json", str(tmp_path / "out.json"), "--judge-seeds", "1"])
    assert all(r.outcome == "tied" and r.confirm_epochs == 2 * 2 for r in one)
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.glob("*.db")) == [
        "verdict-seed0.db",
        "verdict-seed1.db",
    ]


def test_simulation_prints_error_rates_and_power(bench):
    text = bench.simulate(k=3, seeds=(3, 6), repeats=40)
    lines = text.splitlines()
    assert lines[0].startswith("3 optimizers, seeds normal with sd")
    assert [line.split(" seeds:")[0].strip() for line in lines[1:]] == ["3", "6"]
    # More seeds find a gap of 3 standard deviations more often (40 studies each: not noise).
    found = [int(line.rsplit("3 sd ", 1)[1].split("%")[0]) for line in lines[1:]]
    assert found[1] > found[0]
