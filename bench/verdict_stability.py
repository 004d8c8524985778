"""How stable is the study's answer across study seeds, with confirmation and without?

The same study (digits_mlp, all 8 optimizers, the product's defaults: TPE sampler, Hyperband
pruner, the warm start, the task's epochs, confirmation ``DEFAULT_CONFIRM``) is run once per study
seed, through the product's own path: ``service.studies.admin.create_study`` on a fresh SQLite file,
one in-process ``service.worker.Worker`` to completion, then
``service.studies.best_configs.study_best``.
For
each seed:

- with confirmation: the verdict (the winner, or the set of tied leaders);
- without confirmation: the single-seed answer the service gave before the confirmation phase,
  the optimizer whose best *search* trial has the best value (ties: the first in study order, as
  ``service.studies.best_configs.rank`` sorts stably; the table marks them).

Printed: how often the answer agrees across seeds (the most common answer's count, "4 of 5"), with
and without confirmation; whether full-batch ``gd`` (clearly worse at this budget) is ever a
leader; the cost of confirmation in epochs (epochs run by confirmation trials / by search trials,
from each trial's ``epochs_run``), and per optimizer and seed the confirmed figure and standing,
which shows why a verdict moves when it does. Goal (issue 10): the same winner or the same set of
tied leaders in at least 4 of 5 seeds with confirmation, and gd never a leader.

``--json`` also keeps every confirmed config's raw seeds (validation and test figure, last
validation loss, epochs). ``--from-json FILE... --rejudge`` computes each verdict again from them
with this code's ``studies.verdict`` (what the service runs), and ``--judge-seeds N`` /
``--judge-top-k K`` on the first N seeds of the K best configs only: another rule or a smaller
confirmation judged on the same trained seeds. ``--simulate`` prints the test's error rates and
power on simulated seeds, then the confirmation race's (``simulate_race``: false "worse" and
"tied" claims, power and seeds spent per optimizer, next to today's fixed 10-seed test).

Measured (2-core machine shared with other work; studies are deterministic given the seed):

- the rule and confirmation before (the best mean against each other optimizer, p doubled,
  Holm; 3 x 5), seeds 0-4: the tie of the seven minibatch optimizers in 3 of 5 studies, gd a
  leader in 2 (seeds 1, 3); confirmation 12,000 epochs against 6,455 of search (1.86x). The 1 of
  5 measured before that came from this bench running the median pruner instead of the product's
  Hyperband;
- the all-pairs rule with confirmation 2 x 7 (``--jobs 2``), seeds 0-4: the same tie in 4 of 5,
  gd a leader in 1 (seed 3); 11,200 against 6,455 epochs (1.74x);
- fresh study seeds 5-9, run with ``--confirm-seeds 10`` and judged with ``--judge-top-k 2
  --judge-seeds 7``: the same tie in 5 of 5, gd in none; 11,200 against 6,299 epochs (1.78x).
  The rule before at 3 x 5 on the same runs: 4 of 5, gd in 1 (seed 5);
- study seeds 0-9, each run whole (``--seeds 0 1 2 3 4 5 6 7 8 9``; a study takes 30-50 s of
  one core): 2 x 7 the same tie in 9 of 10, gd a leader in 1 (seed 3), 22,400 against 12,754
  epochs (1.76x); 1 x 14 (``--top-k 1 --confirm-seeds 14``) 9 of 10, gd in none, but in seed 8
  momentum came out worse: its search's best config, tied at 0.9721 with its second, confirmed
  at 0.965 against the second's 0.976; 2 x 10, the default since, 10 of 10, gd in none, 32,000
  against 12,754 epochs (2.51x).

The confirmation race (``--from-json runs0-4.json runs5-9.json --race``: ``judge_race`` at its
default looks 3, 5, 7, 10 and margin 0.005, replayed on the 2 x 10 runs of study seeds 0-9): the
same tie of the seven in 10 of 10, gd a leader in none, stopped after 5 or 7 seeds in 7 of 10
(found worse only at the cap in 3); 18,740 confirmation epochs against 32,000 (0.59), the whole
study 0.70 of today's. A second config was confirmed for 54 of 80 optimizers (their search
values within the margin: the search can seldom tell its two best apart on 359 images); of the
26 confirmed alone, the second was better over its 10 seeds in 7, by more than the margin in 1.
Capped at 7 seeds (looks 3, 5, 7): also 10 of 10, gd in none, 0.45 and 0.60; at 5 (3, 5): 5 of
10, gd a leader in 5.

Budget: 20 search trials per optimizer. TPE's first 10 trials are random (Optuna's
``n_startup_trials``), so 20 gives the sampler as many guided trials as random ones, the smallest
budget at which TPE does its job; 20 x 8 search trials (Hyperband stops many early) + 2 x 10 x 8
confirmation trials is 320 trials per study.

Each seed's study runs in its own process with its own worker and database file (``--jobs``
of them at a time, one per core): the studies are independent. Counts epochs, not seconds.

Run: ``.venv/bin/python bench/verdict_stability.py [--quick] [--seeds 0 1 2 3 4] [--n-trials 20]
[--optimizers sgd,adam,gd] [--jobs 2] [--json results.json]``; ``--from-json results.json
[--rejudge] [--judge-seeds N] [--judge-top-k K]`` prints the report of earlier runs again;
``--simulate`` the error rates.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from optim_core.registry import OPTIMIZERS
from service.studies.requests import DEFAULT_CONFIRM
from studies.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER

TASK = "digits_mlp"
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_N_TRIALS = 20
GOAL_AGREEING = 4  # of 5 seeds, with confirmation
MEASURED_BEFORE = "2 of 5"  # the single-seed answer, as measured when the issue was filed
CLEARLY_WORSE = "gd"
TRIALS_PAGE = 500


@dataclass(frozen=True)
class BenchConfig:
    """One run of the benchmark: the study every seed runs, and how."""

    seeds: tuple[int, ...] = DEFAULT_SEEDS
    optimizers: tuple[str, ...] = tuple(OPTIMIZERS)
    n_trials: int = DEFAULT_N_TRIALS
    epochs: int | None = None  # None: the task's default
    top_k: int = DEFAULT_CONFIRM[0]
    confirm_seeds: int = DEFAULT_CONFIRM[1]
    sampler: str = DEFAULT_SAMPLER
    pruner: str = DEFAULT_PRUNER
    jobs: int = 2
    workdir: str | None = None

    def study_request(self, seed: int) -> dict[str, Any]:
        return {
            "name": f"stability-seed{seed}",
            "task": TASK,
            "optimizers": list(self.optimizers),
            "n_trials": self.n_trials,
            "epochs": self.epochs,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "seed": seed,
            "confirm": {"top_k": self.top_k, "seeds": self.confirm_seeds},
        }


QUICK = BenchConfig(
    seeds=(0, 1, 2),
    optimizers=("sgd", "adam", "gd"),
    n_trials=4,
    epochs=5,
    top_k=1,
    confirm_seeds=3,
)


@dataclass
class OptimizerOutcome:
    """One optimizer in one seed's study."""

    optimizer: str
    search_best: float | None  # best value of its search trials
    status: str | None  # verdict standing: best / tied / worse / no_seeds
    mean: float | None  # confirmed figure of its representative config, over seeds
    half_width: float | None  # of the 95% interval
    n: int
    p_adjusted: float | None  # against the best mean (Holm-adjusted)
    config_rank: int | None  # search rank (1 = best search value) of the representative config
    lr: float | None  # learning rate of the representative config
    std: float | None = None  # of its seeds' values


@dataclass
class ConfirmedRun:
    """One confirmed config of one optimizer: its seeds' raw figures, for analysis after the run.

    ``seeds`` holds, per finished confirmation seed, its training-seed index (the same index is
    the same model initialisation and batch order for every optimizer and config when the
    service pairs seeds), the validation value, the test value and the last epoch's validation
    loss when the task records one."""

    optimizer: str
    config: int  # the search slot it re-trains
    search_value: float | None
    params: dict[str, Any]
    seeds: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SeedResult:
    """What one seed's study answered and what it cost."""

    seed: int
    status: str
    outcome: str | None
    winner: str | None
    leaders: list[str]
    sentence: str
    single_winner: str | None
    single_value: float | None
    single_tied_with: list[str]  # other optimizers whose best search value equals the winner's
    search_trials: int
    confirm_trials: int
    search_epochs: int
    confirm_epochs: int
    seconds: float
    optimizers: list[OptimizerOutcome] = field(default_factory=list)
    confirmed: list[ConfirmedRun] = field(default_factory=list)

    @property
    def verdict_answer(self) -> str:
        return answer_label(self.outcome, self.winner, self.leaders)


def answer_label(outcome: str | None, winner: str | None, leaders: Sequence[str]) -> str:
    """One comparable label per verdict: the winner's name, or the set of tied leaders (order
    does not matter: two seeds with the same leaders give the same answer)."""
    if outcome == "winner" and winner is not None:
        return winner
    if outcome in ("tied", "single"):
        return "tied{" + ", ".join(sorted(leaders)) + "}"
    return f"no verdict ({outcome})"


def agreement(answers: Sequence[str | None]) -> tuple[int, str | None]:
    """The most common answer and how many seeds gave it (the first such answer on a tie)."""
    counted = Counter(answer for answer in answers if answer is not None)
    if not counted:
        return 0, None
    answer, count = counted.most_common(1)[0]
    return count, answer


# --------------------------------------------------------------------------- one seed


def run_seed(config: BenchConfig, seed: int, workdir: str) -> SeedResult:
    """Create the study of ``seed`` on a fresh SQLite file, run it to completion with one worker,
    and read its answers back. Builds its engines itself (it may run in a fresh process)."""
    import optuna

    from service.config import Settings
    from service.store.database import Database, make_optuna_storage
    from service.store.migrate import upgrade_database
    from service.studies import best_configs as study_bests
    from service.studies import trial_list
    from service.studies.admin import create_study
    from service.studies.requests import StudyRequest
    from service.worker import Worker

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("service").setLevel(logging.WARNING)
    path = Path(workdir) / f"verdict-seed{seed}.db"
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    settings = Settings(database_url=url, poll_interval=0.05)
    db = Database.connect(url)
    storage = make_optuna_storage(url)
    try:
        upgrade_database(db)
        request = StudyRequest(**config.study_request(seed))
        create_study(db=db, storage=storage, settings=settings, request=request)
        start = time.perf_counter()
        Worker(settings, exit_when_idle=True).run()
        seconds = time.perf_counter() - start
        best = study_bests.study_best(db, request.name)
        trials = _all_trials(trial_list, db, storage, request.name)
        confirmed = _confirmed_runs(db, request.name, trials)
    finally:
        db.dispose()
        storage.engine.dispose()
    result = _seed_result(seed, config.optimizers, best, trials, seconds)
    result.confirmed = confirmed
    return result


def _confirmed_runs(db: Any, name: str, trials: Sequence[Any]) -> list[ConfirmedRun]:
    """Every confirmed config with its seeds' raw figures, read from the slot record."""
    import sqlalchemy as sa

    from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow

    curves = {(t.optimizer, t.number): t.curves or {} for t in trials}
    epochs = {(t.optimizer, t.number): t.epochs_run for t in trials}
    with db.read() as session:
        rows = session.execute(
            sa.select(StudyOptimizerRow.optimizer, TrialSlotRow)
            .join(StudyOptimizerRow, TrialSlotRow.study_optimizer_id == StudyOptimizerRow.id)
            .join(StudyRow, StudyOptimizerRow.study_id == StudyRow.id)
            .where(StudyRow.name == name)
            .order_by(TrialSlotRow.id)
        ).all()
        slots = [(optimizer, _slot_fields(slot)) for optimizer, slot in rows]
    by_id = {slot["id"]: (optimizer, slot) for optimizer, slot in slots}
    runs: dict[int, ConfirmedRun] = {}
    for optimizer, slot in slots:
        if slot["origin"] != "confirm" or slot["confirm_of"] is None:
            continue
        source = by_id[slot["confirm_of"]][1]
        run = runs.setdefault(
            source["id"],
            ConfirmedRun(optimizer, source["id"], source["value"], source["params"] or {}),
        )
        if slot["outcome"] != "complete" or slot["value"] is None:
            continue
        losses = curves.get((optimizer, slot["trial_number"]), {}).get("val_loss") or [None]
        run.seeds.append(
            {
                "val": slot["value"],
                "test": slot["test_value"],
                "val_loss": losses[-1],
                "epochs": epochs.get((optimizer, slot["trial_number"])),
            }
        )
    return list(runs.values())


def _slot_fields(slot: Any) -> dict[str, Any]:
    fields = ("id", "origin", "confirm_of", "outcome", "value", "test_value", "params")
    values = {key: getattr(slot, key) for key in fields}
    values["trial_number"] = slot.trial_number
    return values


# --------------------------------------------------------------------------- judging again


def rejudge(
    results: Sequence[SeedResult], *, seeds: int | None = None, top_k: int | None = None
) -> list[SeedResult]:
    """Each seed's verdict computed again by :func:`studies.verdict.study_verdict` (what the
    service runs) from the raw confirmed figures, on the first ``seeds`` confirmation seeds of
    each config (in the order they were claimed) and its ``top_k`` best search configs: a smaller
    confirmation, or another verdict rule, judged on the same trained seeds without training
    again. The confirmation cost is that of the seeds used (confirmation trials are never pruned,
    so each runs the task's epochs unless it diverged)."""
    from studies.tasks import available_tasks
    from studies.verdict import ConfirmedConfig, study_verdict

    task = available_tasks()[TASK]
    direction = task.metrics[task.default_metric]
    sign = 1.0 if direction == "maximize" else -1.0
    judged = []
    for result in results:
        if not result.confirmed:
            raise SystemExit(f"seed {result.seed}: no raw confirmed figures in this file")
        ranked = sorted(result.confirmed, key=lambda c: (-sign * (c.search_value or 0), c.config))
        configs: dict[str, list[ConfirmedConfig]] = {o.optimizer: [] for o in result.optimizers}
        used_epochs = 0
        all_epochs = 0
        for run_ in ranked:
            all_epochs += sum(seed.get("epochs") or 0 for seed in run_.seeds)
            if top_k is not None and len(configs[run_.optimizer]) >= top_k:
                continue
            kept = run_.seeds[:seeds]
            used_epochs += sum(seed.get("epochs") or 0 for seed in kept)
            configs[run_.optimizer].append(
                ConfirmedConfig(
                    key=run_.config,
                    params=run_.params,
                    python=None,
                    val=tuple(seed["val"] for seed in kept),
                    test=tuple(seed["test"] for seed in kept if seed["test"] is not None),
                )
            )
        verdict = study_verdict(configs, direction).verdict
        standings = {s.optimizer: s for s in verdict.standings}
        outcomes = []
        for old in result.optimizers:
            standing = standings.get(old.optimizer)
            summary = standing.summary if standing is not None else None
            comparison = standing.comparison if standing is not None else None
            outcomes.append(
                replace(
                    old,
                    status=standing.status if standing is not None else None,
                    mean=summary.mean if summary else None,
                    half_width=summary.half_width if summary else None,
                    std=summary.std if summary else None,
                    n=summary.n if summary else 0,
                    p_adjusted=comparison.p_adjusted if comparison else None,
                    config_rank=None,
                )
            )
        used = sum(len(c.val) for cs in configs.values() for c in cs)
        total = sum(len(r.seeds) for r in result.confirmed)
        if all_epochs:  # recorded per seed: the epochs of the seeds used
            confirm_epochs = used_epochs
        else:  # older files: the share of the seeds used
            confirm_epochs = round(result.confirm_epochs * used / total) if total else 0
        judged.append(
            replace(
                result,
                outcome=verdict.outcome,
                winner=verdict.winner,
                leaders=list(verdict.leaders),
                sentence=verdict.sentence,
                confirm_epochs=confirm_epochs,
                confirm_trials=used if total else result.confirm_trials,
                optimizers=outcomes,
            )
        )
    return judged


def race_report(results: Sequence[SeedResult], looks: Sequence[int] | None = None) -> str:
    """The confirmation race replayed on the raw seeds of earlier runs (``--from-json FILE
    --race``): per optimizer, ``configs_to_confirm`` on the search values of its confirmed
    configs (the margin from ``default_equivalence``), the better mean of the two on the first
    look's seeds as its representative, then ``judge_race`` on that config's seeds in the order
    they were claimed. Counted: the race's answer per study, its agreement across studies, and
    its confirmation epochs (seeds used, plus a second config's first-look seeds) against the
    fixed confirmation's and the search's."""
    from studies.tasks import available_tasks
    from studies.verdict import (
        DEFAULT_LOOKS,
        RaceDesign,
        SearchTrial,
        configs_to_confirm,
        default_equivalence,
        judge_race,
        representative_config,
    )

    task = available_tasks()[TASK]
    metric = task.default_metric
    direction = task.metrics[metric]
    sign = 1.0 if direction == "maximize" else -1.0
    looks = tuple(looks or DEFAULT_LOOKS)
    lines = [
        f"The race (looks {', '.join(map(str, looks))}) replayed on the raw seeds of each study:",
        f"{'seed':>4}  {'race answer':<66}  {'seeds':>5}  {'2nd':>3}  {'race ep':>7}  "
        f"{'fixed ep':>8}  {'search ep':>9}",
    ]
    answers, race_epochs, fixed_epochs, search_epochs, gd_leads = [], 0, 0, 0, []
    picks: Counter[str] = Counter()
    for result in results:
        ranked: dict[str, list[ConfirmedRun]] = {}
        for run_ in sorted(
            result.confirmed, key=lambda c: (-sign * (c.search_value or 0), c.config)
        ):
            ranked.setdefault(run_.optimizer, []).append(run_)
        searched = [r.search_value for runs in ranked.values() for r in runs if r.search_value]
        design = RaceDesign(
            equivalence=default_equivalence(metric, searched, direction), looks=looks
        )
        values: dict[str, list[float | None]] = {}
        epochs_per_seed: dict[str, float] = {}
        extra_epochs = 0.0
        seconds = 0
        for name, runs in ranked.items():
            trials = [SearchTrial(r.search_value or 0.0, r.params) for r in runs]
            chosen = [
                runs[i] for i in configs_to_confirm(trials, direction, design.equivalence).confirm
            ]
            first = {i: [s["val"] for s in r.seeds[: looks[0]]] for i, r in enumerate(chosen)}
            key = representative_config(first, direction)
            run_ = chosen[key if key is not None else 0]
            values[name] = [s["val"] for s in run_.seeds]
            all_seeds = [s.get("epochs") or 0 for r in runs for s in r.seeds]
            epochs_per_seed[name] = statistics.mean(all_seeds) if all_seeds else 0.0
            if len(chosen) > 1:
                seconds += 1
                extra_epochs += looks[0] * epochs_per_seed[name]
            if len(runs) > 1:  # the rule against the two configs' full seeds
                means = [sign * statistics.mean(s["val"] for s in r.seeds) for r in runs[:2]]
                better_second = means[1] - means[0]
                if len(chosen) > 1:
                    picks["two"] += 1
                    picks["two, picked the better"] += (run_ is runs[0]) == (better_second <= 0)
                else:
                    picks["one"] += 1
                    picks["one, second better"] += better_second > 0
                    picks["one, second better by the margin"] += better_second > design.equivalence
        race = judge_race(values, direction, design)
        used = sum(
            (o.stopped_at_seeds or o.seeds) * epochs_per_seed[name]
            for name, o in race.optimizers.items()
        )
        epochs = round(used + extra_epochs)
        answer = answer_label("winner" if race.winner else "tied", race.winner, race.leaders)
        answers.append(answer)
        if CLEARLY_WORSE in race.leaders:
            gd_leads.append(result.seed)
        race_epochs += epochs
        fixed_epochs += result.confirm_epochs
        search_epochs += result.search_epochs
        spent = sum(o.stopped_at_seeds or o.seeds for o in race.optimizers.values())
        lines.append(
            f"{result.seed:>4}  {answer:<66}  {spent:>5}  {seconds:>3}  {epochs:>7}  "
            f"{result.confirm_epochs:>8}  {result.search_epochs:>9}"
        )
    count, common = agreement(answers)
    n = len(results)
    lines.append(f"race agreement: {count} of {n} studies give {common}")
    lines.append(
        f"{CLEARLY_WORSE} a leader of the race in {len(gd_leads)} of {n}"
        + (f" (seeds {', '.join(map(str, gd_leads))})" if gd_leads else "")
    )
    lines.append(
        f"configs: a second one confirmed for {picks['two']} of {picks['two'] + picks['one']} "
        f"optimizers; the first look picked the one with the better mean over all its seeds in "
        f"{picks['two, picked the better']} of {picks['two']}. Confirmed alone: "
        f"{picks['one']}, whose unconfirmed second config had the better mean in "
        f"{picks['one, second better']} (by more than the margin in "
        f"{picks['one, second better by the margin']})"
    )
    today = fixed_epochs + search_epochs
    lines.append(
        f"epochs: race confirmation {race_epochs} against the fixed one's {fixed_epochs} "
        f"({race_epochs / fixed_epochs if fixed_epochs else math.nan:.2f}); whole study "
        f"{race_epochs + search_epochs} against {today} "
        f"({(race_epochs + search_epochs) / today if today else math.nan:.2f})"
    )
    return "\n".join(lines)


def _all_trials(trial_list: Any, db: Any, storage: Any, name: str) -> list[Any]:
    trials: list[Any] = []
    while True:
        page = trial_list.list_trials(db, storage, name=name, limit=TRIALS_PAGE, offset=len(trials))
        trials.extend(page.items)
        if not page.items or len(trials) >= page.total:
            return trials


def _seed_result(
    seed: int, optimizers: Sequence[str], best: Any, trials: Sequence[Any], seconds: float
) -> SeedResult:
    search = [t for t in trials if t.origin != "confirm"]
    confirm = [t for t in trials if t.origin == "confirm"]
    sign = 1.0 if best.direction == "maximize" else -1.0
    search_best: dict[str, float] = {}
    ranked_values: dict[str, list[float]] = {}
    for trial in search:
        if trial.state != "complete" or trial.value is None:
            continue
        ranked_values.setdefault(trial.optimizer, []).append(trial.value)
        current = search_best.get(trial.optimizer)
        if current is None or sign * trial.value > sign * current:
            search_best[trial.optimizer] = trial.value
    # The answer before confirmation: the best single search trial; equal values keep study order.
    in_order = [name for name in optimizers if name in search_best]
    single = max(in_order, key=lambda name: sign * search_best[name], default=None)
    tied_with = [
        name
        for name in in_order
        if single is not None and name != single and search_best[name] == search_best[single]
    ]
    verdict = best.verdict or {}
    standings = {s["optimizer"]: s for s in verdict.get("standings", [])}
    confirmed = {entry.optimizer: entry for entry in best.optimizers}
    outcomes = []
    for name in optimizers:
        standing = standings.get(name, {})
        summary = standing.get("summary") or {}
        comparison = standing.get("comparison") or {}
        entry = confirmed.get(name)
        rank = None
        if entry is not None and entry.confirmed is not None:
            values = sorted(ranked_values.get(name, []), key=lambda v: -sign * v)
            # Its search run (its `value` is the mean over the confirmation's seeds).
            run = entry.search_value
            rank = values.index(run) + 1 if run in values else None
        outcomes.append(
            OptimizerOutcome(
                optimizer=name,
                search_best=search_best.get(name),
                status=standing.get("status"),
                mean=summary.get("mean"),
                half_width=summary.get("half_width"),
                n=summary.get("n", 0),
                p_adjusted=comparison.get("p_adjusted"),
                config_rank=rank,
                lr=entry.params.get("lr") if entry is not None else None,
                std=summary.get("std"),
            )
        )
    return SeedResult(
        seed=seed,
        status=str(best.status),
        outcome=verdict.get("outcome"),
        winner=verdict.get("winner"),
        leaders=list(verdict.get("leaders", [])),
        sentence=verdict.get("sentence", ""),
        single_winner=single,
        single_value=search_best.get(single) if single else None,
        single_tied_with=tied_with,
        search_trials=len(search),
        confirm_trials=len(confirm),
        search_epochs=sum(t.epochs_run or 0 for t in search),
        confirm_epochs=sum(t.epochs_run or 0 for t in confirm),
        seconds=seconds,
        optimizers=outcomes,
    )


# --------------------------------------------------------------------------- all seeds


def run(config: BenchConfig, *, log: Any = sys.stderr) -> list[SeedResult]:
    """Every seed's study; ``config.jobs`` processes at a time (1: in this process)."""
    with tempfile.TemporaryDirectory(prefix="hpt-verdict-") as scratch:
        workdir = config.workdir or scratch
        Path(workdir).mkdir(parents=True, exist_ok=True)
        results: list[SeedResult] = []
        if config.jobs <= 1:
            for seed in config.seeds:
                results.append(run_seed(config, seed, workdir))
                _progress(results[-1], log)
        else:
            # Spawned, not forked: each study builds its engines and torch state in its own process.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(config.jobs, mp_context=context) as pool:
                futures = [pool.submit(run_seed, config, seed, workdir) for seed in config.seeds]
                for future in as_completed(futures):
                    results.append(future.result())
                    _progress(results[-1], log)
    return sorted(results, key=lambda result: result.seed)


def _progress(result: SeedResult, log: Any) -> None:
    print(
        f"seed {result.seed} done in {result.seconds:.0f} s: {result.verdict_answer}",
        file=log,
        flush=True,
    )


def _spreads(results: Sequence[SeedResult], index: int) -> str:
    """The spread of an optimizer's confirmed mean between studies (which configs each search
    found, plus seed noise) beside the seed noise within a study (the standard error of a mean)."""
    outcomes = [r.optimizers[index] for r in results if r.optimizers[index].mean is not None]
    means = [o.mean for o in outcomes if o.mean is not None]
    errors = [o.std / math.sqrt(o.n) for o in outcomes if o.std is not None and o.n > 1]
    if len(means) < 2 or not errors:
        return ""
    within = math.sqrt(statistics.mean(e * e for e in errors))
    return (
        f"; confirmed mean {statistics.mean(means):.4f}, sd between studies "
        f"{statistics.stdev(means):.4f}, standard error within a study {within:.4f}"
    )


def _seeds(seeds: Sequence[int]) -> str:
    return f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f} (one seed, no spread)"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} (mean ± sd over seeds)"


def report(config: BenchConfig, results: Sequence[SeedResult]) -> str:
    """The printed tables and summary lines."""
    lines: list[str] = []
    n = len(results)
    epochs = config.epochs if config.epochs is not None else "task default"
    lines.append(
        f"{TASK}: {len(config.optimizers)} optimizers ({', '.join(config.optimizers)}), "
        f"{config.n_trials} search trials each, epochs = {epochs}, sampler {config.sampler}, "
        f"pruner {config.pruner}, confirm top_k {config.top_k} x {config.confirm_seeds} seeds; "
        f"study seeds {', '.join(map(str, config.seeds))}"
    )
    lines.append("")
    header = (
        f"{'seed':>4}  {'status':<9}  {'single-seed winner (val)':<30}  "
        f"{'verdict with confirmation':<66}  {'search ep':>9}  {'confirm ep':>10}"
    )
    lines += [header, "-" * len(header)]
    for r in results:
        single = "-"
        if r.single_winner is not None:
            single = f"{r.single_winner} ({_fmt(r.single_value)})"
            if r.single_tied_with:
                single += " =" + ",".join(r.single_tied_with)
        lines.append(
            f"{r.seed:>4}  {r.status:<9}  {single:<30}  {r.verdict_answer:<66}  "
            f"{r.search_epochs:>9}  {r.confirm_epochs:>10}"
        )
    lines.append("")

    lines.append("Per optimizer and seed: confirmed mean ± 95% half-width (seeds), standing,")
    lines.append("Holm-adjusted p against the best, search rank of the representative config:")
    for o_index, name in enumerate(config.optimizers):
        cells = []
        for r in results:
            o = r.optimizers[o_index]
            if o.mean is None:
                cells.append(f"seed {r.seed}: no seeds")
                continue
            p = "" if o.p_adjusted is None else f" p={o.p_adjusted:.3f}"
            cells.append(
                f"seed {r.seed}: {_fmt(o.mean)}±{_fmt(o.half_width)} {o.status}{p} "
                f"#{o.config_rank if o.config_rank is not None else '?'}"
            )
        leader_count = sum(1 for r in results if r.optimizers[o_index].status in ("best", "tied"))
        lines.append(f"  {name:<9} leader in {leader_count} of {n}{_spreads(results, o_index)}")
        lines += [f"      {cell}" for cell in cells]
    lines.append("")

    with_count, with_answer = agreement([r.verdict_answer for r in results])
    without_count, without_answer = agreement([r.single_winner for r in results])
    goal_n = math.ceil(GOAL_AGREEING / 5 * n)
    met = "met" if with_count >= goal_n else "NOT met"
    lines.append(
        f"agreement with confirmation:    {with_count} of {n} seeds give {with_answer} "
        f"(goal >= {goal_n} of {n}: {met})"
    )
    lines.append(
        f"agreement without confirmation: {without_count} of {n} seeds give {without_answer} "
        f"(single-seed winner; measured before: {MEASURED_BEFORE})"
    )
    best_mean = [
        next((o.optimizer for o in r.optimizers if o.status == "best"), None) for r in results
    ]
    mean_count, mean_answer = agreement(best_mean)
    lines.append(
        f"best confirmed mean (no test):  {mean_count} of {n} seeds give {mean_answer} "
        "(the verdict's rank 1, for comparison)"
    )
    leads = {name: sum(1 for r in results if name in r.leaders) for name in config.optimizers}
    always = [name for name, count in leads.items() if count == n]
    sometimes = [f"{name} ({count} of {n})" for name, count in leads.items() if 0 < count < n]
    lines.append(
        f"leaders in every seed: {', '.join(always) or 'none'}; "
        f"in some seeds only: {', '.join(sometimes) or 'none'}"
    )
    flips = []
    for o_index, name in enumerate(config.optimizers):
        statuses = {r.seed: r.optimizers[o_index].status for r in results}
        worse = [seed for seed, status in statuses.items() if status == "worse"]
        best = [seed for seed, status in statuses.items() if status == "best"]
        if worse and best:
            flips.append(f"{name} (worse in {_seeds(worse)}; best in {_seeds(best)})")
    # Each verdict is about the configs its search found; a flip means the search, not the
    # seeds of confirmation, decided the standing.
    lines.append(f"worse beyond noise in one seed, best in another: {', '.join(flips) or 'none'}")
    tied_single = sum(1 for r in results if r.single_tied_with)
    if tied_single:
        lines.append(
            f"  ({tied_single} of {n} single-seed answers are a tie of best search values, broken "
            "by study order as the service did)"
        )
    if CLEARLY_WORSE in config.optimizers:
        gd_leads = [r.seed for r in results if CLEARLY_WORSE in r.leaders]
        gd_single = [r.seed for r in results if r.single_winner == CLEARLY_WORSE]
        lines.append(
            f"{CLEARLY_WORSE} among the leaders: {len(gd_leads)} of {n} seeds"
            + (f" (seeds {', '.join(map(str, gd_leads))})" if gd_leads else "")
            + f"; single-seed winner: {len(gd_single)} of {n}"
        )
    search = sum(r.search_epochs for r in results)
    confirm = sum(r.confirm_epochs for r in results)
    ratios = [r.confirm_epochs / r.search_epochs for r in results if r.search_epochs]
    lines.append(
        f"confirmation cost: {confirm} epochs / {search} search epochs = "
        f"{confirm / search if search else math.nan:.2f} overall; per seed {_mean_sd(ratios)}"
    )
    lines.append(
        f"trials: {sum(r.search_trials for r in results)} search, "
        f"{sum(r.confirm_trials for r in results)} confirmation; "
        f"worker seconds per study: {_mean_sd([r.seconds for r in results])}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the test's error rates


# About the seed standard deviation of a confirmed config on digits_mlp (0.003 to 0.004); the
# rates depend only on gaps counted in it.
SIMULATED_SD = 0.0035


def simulate(k: int = 8, seeds: Sequence[int] = (5, 7, 10), repeats: int = 1000) -> str:
    """The verdict's error rates and power on simulated seeds (normal, sd ``SIMULATED_SD``), by
    the product's :func:`studies.verdict.decide`: with ``k`` equal optimizers, how often one of
    them is called worse or a winner is named (both should stay at most 5%); with ``k - 1``
    equal and one lower by 2, 2.5 or 3 seed standard deviations, how often that one is found
    worse (the power that sets the number of confirmation seeds)."""
    import numpy as np

    from studies.verdict import decide

    rng = np.random.default_rng(0)
    lines = [
        f"{k} optimizers, seeds normal with sd {SIMULATED_SD}, {repeats} simulated studies each:"
    ]
    for n in seeds:
        worse = winners = 0
        for _ in range(repeats):
            values = rng.normal(0.977, SIMULATED_SD, size=(k, n))
            verdict = decide({f"o{i}": list(row) for i, row in enumerate(values)}, "maximize")
            worse += any(s.status == "worse" for s in verdict.standings)
            winners += verdict.outcome == "winner"
        found = []
        for gap in (2.0, 2.5, 3.0):
            hits = 0
            for _ in range(repeats):
                values = rng.normal(0.977, SIMULATED_SD, size=(k, n))
                values[-1] -= gap * SIMULATED_SD
                verdict = decide({f"o{i}": list(row) for i, row in enumerate(values)}, "maximize")
                hits += verdict.standing(f"o{k - 1}").status == "worse"
            found.append(f"{gap:g} sd {hits / repeats:.0%}")
        lines.append(
            f"  {n:>2} seeds: all equal: one called worse in {worse / repeats:.1%}, a winner in "
            f"{winners / repeats:.1%}; one lower by {', '.join(found)} of the time found worse"
        )
    return "\n".join(lines)


# The race against today's fixed confirmation, on digits_mlp's scale: a seed sd near 0.003, seven
# minibatch optimizers within 0.002 of each other, gd about 0.011 below; the default margin 0.005.
RACE_SD = 0.003
RACE_MARGIN = 0.005
FIXED_SEEDS = 10  # today: all-pairs Welch + Holm on 10 seeds of each of 2 configs


@dataclass(frozen=True)
class RaceScenario:
    """Simulated optimizers' true means, in seed standard deviations from the best."""

    label: str
    offsets: tuple[float, ...]  # per optimizer, <= 0; 0 for the equal ones
    low: int | None = None  # index of the one truly worse optimizer, if any
    margin: float = RACE_MARGIN


def race_scenarios(k: int = 8) -> list[RaceScenario]:
    spread = [-(0.002 / RACE_SD) * i / (k - 2) for i in range(k - 1)]  # 0 to 0.002 below
    return [
        RaceScenario(f"{k} equal", (0.0,) * k),
        RaceScenario("one 2 sd lower", (0.0,) * (k - 1) + (-2.0,), k - 1),
        RaceScenario("one 2.5 sd lower", (0.0,) * (k - 1) + (-2.5,), k - 1),
        RaceScenario(
            f"one at the margin ({RACE_MARGIN / RACE_SD:.2g} sd) lower",
            (0.0,) * (k - 1) + (-RACE_MARGIN / RACE_SD,),
            k - 1,
        ),
        RaceScenario(
            "digits_mlp-like: 7 within 0.002, gd 0.011 lower",
            (*spread, -0.011 / RACE_SD),
            k - 1,
        ),
        RaceScenario(
            "the same, margin 0.01 (3.3 sd)",
            (*spread, -0.011 / RACE_SD),
            k - 1,
            margin=0.01,
        ),
    ]


def simulate_race(
    designs: Sequence[tuple[int, ...]] = ((3, 5, 7, 10), (3, 5, 7)),
    k: int = 8,
    repeats: int = 1000,
) -> str:
    """The race (``studies.verdict.judge_race``, margin ``RACE_MARGIN`` unless the scenario
    says otherwise) against today's fixed
    confirmation (``decide`` on 10 seeds of each optimizer's representative config, 2 configs
    x 10 seeds trained), on normal seeds with sd ``RACE_SD``. Per scenario and rule: how often
    an equal optimizer is called worse (a false "worse"; at most 5%), how often the lower one is
    found worse (power), how often some pair is falsely called tied (differing by the margin or
    more), how the pairs among the equal ones end, and the seeds trained per optimizer (the
    race's representative config only; a second config adds the first look's seeds)."""
    import numpy as np

    from studies.verdict import RaceDesign, decide, judge_race

    rng = np.random.default_rng(0)
    names = [f"o{i}" for i in range(k)]
    header = (
        f"{'scenario':<50} {'rule':<18} {'false worse':>11} {'low found':>9} "
        f"{'false tie':>9} {'equal pairs tied/not sep.':>25} {'seeds/opt':>9} {'w/ 2nd cfg':>10}"
    )
    lines = [
        f"{k} optimizers, seeds normal with sd {RACE_SD}, margin {RACE_MARGIN} "
        f"({RACE_MARGIN / RACE_SD:.2f} sd), {repeats} simulated studies per scenario; "
        "seeds/opt: trained seeds per optimizer of the config it is judged on; w/ 2nd cfg: all "
        "its trainings when a second config is confirmed too (today 2 x 10 = 20; in the race the "
        "second runs the first look's seeds only)",
        header,
        "-" * len(header),
    ]
    for scenario in race_scenarios(k):
        means = 0.977 + RACE_SD * np.array(scenario.offsets)
        equal = [i for i in range(k) if i != scenario.low]
        far = {
            (i, j)
            for i in range(k)
            for j in range(i + 1, k)
            if abs(means[i] - means[j]) >= scenario.margin - 1e-12
        }
        draws = [rng.normal(means[:, None], RACE_SD, size=(k, 10)) for _ in range(repeats)]
        rows: list[tuple[str, dict[str, float]]] = []
        stats_fixed: Counter[str] = Counter()
        for values in draws:
            verdict = decide(
                {n: list(row) for n, row in zip(names, values, strict=True)}, "maximize"
            )
            stats_fixed["false worse"] += any(
                verdict.standing(names[i]).status == "worse" for i in equal
            )
            if scenario.low is not None:
                stats_fixed["low"] += verdict.standing(names[scenario.low]).status == "worse"
        rows.append(
            (
                f"fixed {FIXED_SEEDS} seeds",
                {
                    "false worse": stats_fixed["false worse"] / repeats,
                    "low": stats_fixed["low"] / repeats,
                    "false tie": math.nan,
                    "tied": math.nan,
                    "open": math.nan,
                    "seeds": float(FIXED_SEEDS),
                    "trainings": 2.0 * FIXED_SEEDS,
                },
            )
        )
        for looks in designs:
            design = RaceDesign(equivalence=scenario.margin, looks=looks)
            counts: Counter[str] = Counter()
            seeds_spent = 0
            equal_pairs = len(equal) * (len(equal) - 1) // 2
            for values in draws:
                race = judge_race(
                    {n: list(row) for n, row in zip(names, values, strict=True)}, "maximize", design
                )
                status = {n: o.status for n, o in race.optimizers.items()}
                counts["false worse"] += any(status[names[i]] == "worse" for i in equal)
                if scenario.low is not None:
                    counts["low"] += status[names[scenario.low]] == "worse"
                outcome = {(names.index(p.a), names.index(p.b)): p.outcome for p in race.pairs}
                counts["false tie"] += any(
                    outcome.get((i, j), outcome.get((j, i))) == "tied" for i, j in far
                )
                for i in equal:
                    for j in equal:
                        if i < j:
                            result = outcome.get((i, j), outcome.get((j, i)))
                            counts["tied"] += result == "tied"
                            counts["open"] += result == "not_separable"
                seeds_spent += sum(o.stopped_at_seeds or 0 for o in race.optimizers.values())
            per = seeds_spent / repeats / k
            rows.append(
                (
                    f"race {','.join(map(str, looks))}",
                    {
                        "false worse": counts["false worse"] / repeats,
                        "low": counts["low"] / repeats,
                        "false tie": counts["false tie"] / repeats,
                        "tied": counts["tied"] / repeats / max(1, equal_pairs),
                        "open": counts["open"] / repeats / max(1, equal_pairs),
                        "seeds": per,
                        "trainings": per + looks[0],
                    },
                )
            )
        for rule, row in rows:
            low = f"{row['low']:.1%}" if scenario.low is not None else "-"
            tie = "-" if math.isnan(row["false tie"]) else f"{row['false tie']:.1%}"
            pairs = "-" if math.isnan(row["tied"]) else f"{row['tied']:.0%} / {row['open']:.0%}"
            lines.append(
                f"{scenario.label:<50} {rule:<18} {row['false worse']:>11.1%} {low:>9} "
                f"{tie:>9} {pairs:>25} {row['seeds']:>9.2f} {row['trainings']:>10.2f}"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class Rejudge:
    """``--from-json`` options: which earlier runs, and whether to judge their seeds again."""

    paths: tuple[str, ...] = ()
    again: bool = False
    seeds: int | None = None
    top_k: int | None = None
    race: bool = False


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[BenchConfig, str | None, Rejudge]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes' smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", help="study seeds (default 0 1 2 3 4)")
    parser.add_argument("--n-trials", type=int, help="search trials per optimizer (default 20)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default: the task's)")
    parser.add_argument(
        "--optimizers", help=f"comma-separated (default all: {','.join(OPTIMIZERS)})"
    )
    parser.add_argument(
        "--top-k", type=int, help=f"confirmed configs per optimizer (default {DEFAULT_CONFIRM[0]})"
    )
    parser.add_argument(
        "--confirm-seeds",
        type=int,
        help=f"seeds per confirmed config (default {DEFAULT_CONFIRM[1]})",
    )
    parser.add_argument("--jobs", type=int, help="studies run at once (default 2, one per core)")
    parser.add_argument("--workdir", help="keep the SQLite files here (default: a temp dir)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument(
        "--from-json",
        nargs="+",
        help="print the report of earlier runs' --json files (their seeds together); run nothing",
    )
    parser.add_argument(
        "--rejudge",
        action="store_true",
        help="with --from-json: compute each verdict again from the raw seeds with this code",
    )
    parser.add_argument(
        "--judge-seeds", type=int, help="with --rejudge: only the first N seeds of each config"
    )
    parser.add_argument(
        "--judge-top-k", type=int, help="with --rejudge: only the K best search configs"
    )
    parser.add_argument(
        "--race",
        action="store_true",
        help="with --from-json: also replay the confirmation race on the raw seeds",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="print the verdict's error rates and power on simulated seeds; run nothing",
    )
    parser.add_argument(
        "--repeats", type=int, default=1000, help="with --simulate: simulated studies per case"
    )
    args = parser.parse_args(argv)
    if args.simulate:
        print(simulate())
        print()
        print(simulate_race(repeats=args.repeats))
        raise SystemExit(0)
    config = QUICK if args.quick else BenchConfig()
    overrides: dict[str, Any] = {
        "seeds": tuple(args.seeds) if args.seeds else None,
        "n_trials": args.n_trials,
        "epochs": args.epochs,
        "optimizers": tuple(args.optimizers.split(",")) if args.optimizers else None,
        "top_k": args.top_k,
        "confirm_seeds": args.confirm_seeds,
        "jobs": args.jobs,
        "workdir": args.workdir,
    }
    unknown = [name for name in overrides["optimizers"] or () if name not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown optimizers {unknown}; choose from {sorted(OPTIMIZERS)}")
    values = {key: value for key, value in overrides.items() if value is not None}
    rejudge = Rejudge(
        paths=tuple(args.from_json or ()),
        again=args.rejudge or args.judge_seeds is not None or args.judge_top_k is not None,
        seeds=args.judge_seeds,
        top_k=args.judge_top_k,
        race=args.race,
    )
    return BenchConfig(**{**asdict(config), **values}), args.json, rejudge


def load_results(paths: Sequence[str]) -> tuple[BenchConfig, list[SeedResult]]:
    """The config (of the first file, with every file's seeds) and results earlier runs wrote
    with ``--json``; the runs should share their settings but for the study seeds."""
    results: list[SeedResult] = []
    configs = []
    for path in paths:
        payload = json.loads(Path(path).read_text())
        configs.append(
            BenchConfig(
                **{
                    key: tuple(value) if isinstance(value, list) else value
                    for key, value in payload["config"].items()
                }
            )
        )
        for entry in payload["results"]:
            entry = {key: value for key, value in entry.items() if key != "verdict_answer"}
            outcomes = [OptimizerOutcome(**o) for o in entry.pop("optimizers")]
            confirmed = [ConfirmedRun(**c) for c in entry.pop("confirmed", [])]
            results.append(SeedResult(**entry, optimizers=outcomes, confirmed=confirmed))
    results.sort(key=lambda result: result.seed)
    seeds = tuple(result.seed for result in results)
    return replace(configs[0], seeds=seeds), results


def main(argv: Sequence[str] | None = None) -> list[SeedResult]:
    config, json_path, earlier = parse_args(argv)
    if earlier.paths:
        config, results = load_results(earlier.paths)
        if earlier.again:
            results = rejudge(results, seeds=earlier.seeds, top_k=earlier.top_k)
            config = replace(
                config,
                top_k=min(config.top_k, earlier.top_k or config.top_k),
                confirm_seeds=min(config.confirm_seeds, earlier.seeds or config.confirm_seeds),
            )
        print(report(config, results))
        if earlier.race:
            print()
            print(race_report(results))
        return results
    results = run(config)
    print(report(config, results))
    if json_path:
        payload = {
            "config": asdict(config),
            "results": [{**asdict(r), "verdict_answer": r.verdict_answer} for r in results],
        }
        Path(json_path).write_text(json.dumps(payload, indent=2))
    return results


if __name__ == "__main__":
    main()
