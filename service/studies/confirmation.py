"""The confirmation phase's results, read from the slot record: each confirmed config's figures
over its fresh seeds, and the verdict (:mod:`studies.verdict`).

Confirmation slots carry ``origin = "confirm"`` and ``confirm_of``, the search slot whose config
they re-train; a study's confirmation is ``top_k x seeds`` slots per optimizer, so reading it
costs the same whatever the history.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from optim_core.registry import OPTIMIZERS
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from service.vocabulary import ConfigOrigin, SlotOutcome, SlotState
from studies.tasks import available_tasks
from studies.verdict import (
    ConfirmedConfig,
    StudyVerdict,
    race_verdict,
    representative_config,
    study_verdict,
)
from studies.verdict.candidates import SearchTrial, configs_to_confirm
from studies.verdict.race import (
    DEFAULT_LOOKS,
    Race,
    RaceDesign,
    default_equivalence,
    judge_race,
)


def confirmed_configs(
    session: Session, pairs: Sequence[StudyOptimizerRow], direction: str
) -> dict[str, list[ConfirmedConfig]]:
    """Per optimizer, its confirmed configs in search rank (best search value first), each with
    the validation and test figures of its finished seeds. A seed that ended pruned (diverged)
    has no figure and is left out of the mean (the count of seeds shows it)."""
    by_pair = {pair.id: pair for pair in pairs}
    rows = session.execute(
        sa.select(
            TrialSlotRow.study_optimizer_id,
            TrialSlotRow.confirm_of,
            TrialSlotRow.value,
            TrialSlotRow.test_value,
        ).where(
            TrialSlotRow.study_optimizer_id.in_(list(by_pair)),
            TrialSlotRow.origin == ConfigOrigin.CONFIRM,
            TrialSlotRow.state == SlotState.FINISHED,
            TrialSlotRow.outcome == SlotOutcome.COMPLETE,
        )
    ).all()
    seeds: dict[tuple[int, int], list[tuple[float, float | None]]] = defaultdict(list)
    for pair_id, source, value, test_value in rows:
        if source is not None and value is not None:
            seeds[(pair_id, source)].append((value, test_value))
    sources = {source for _, source in seeds} | set(
        session.scalars(
            sa.select(TrialSlotRow.confirm_of)
            .where(
                TrialSlotRow.study_optimizer_id.in_(list(by_pair)),
                TrialSlotRow.origin == ConfigOrigin.CONFIRM,
            )
            .distinct()
        )
    )
    sources.discard(None)
    search = {
        slot.id: slot
        for slot in session.scalars(sa.select(TrialSlotRow).where(TrialSlotRow.id.in_(sources)))
    }
    configs: dict[str, list[ConfirmedConfig]] = {pair.optimizer: [] for pair in pairs}
    reverse = direction == "maximize"
    ranked = sorted(
        search.values(),
        key=lambda slot: slot.value if slot.value is not None else float("-inf"),
        reverse=reverse,
    )
    for slot in ranked:
        pair = by_pair[slot.study_optimizer_id]
        values = seeds.get((pair.id, slot.id), [])
        spec = OPTIMIZERS.get(pair.optimizer)
        params = dict(slot.params or {})
        configs[pair.optimizer].append(
            ConfirmedConfig(
                key=slot.id,
                params=params,
                python=spec.python_line(params) if spec is not None and params else None,
                val=tuple(value for value, _ in values),
                test=tuple(test for _, test in values if test is not None)
                if all(test is not None for _, test in values)
                else (),
            )
        )
    return configs


def verdict_of(session: Session, study: StudyRow) -> StudyVerdict | None:
    """The study's verdict, or ``None`` when it has no confirmation (or it has not started):
    the race's decisions (:func:`studies.verdict.race_verdict`), or, for a study confirmed
    before the race, the all-pairs test over its seeds."""
    if study.confirm_top_k <= 0:
        return None
    pairs = list(study.optimizers)
    configs = confirmed_configs(session, pairs, study.direction)
    if not any(configs.values()):
        return None
    task = available_tasks().get(study.task)
    test_metric = task.test_metric(study.metric) if task is not None else None
    if study.confirm_equivalence is not None:
        values, chosen = _race_values(session, study)
        race = judge_race(values, study.direction, race_design_of(study))
        representative = {
            name: next((c for c in configs.get(name, []) if c.key == chosen.get(name)), None)
            for name in values
        }
        return race_verdict(race, representative, metric=study.metric, test_metric=test_metric)
    return study_verdict(configs, study.direction, metric=study.metric, test_metric=test_metric)


def record_confirmed_best(session: Session, study: StudyRow) -> None:
    """At the end of the confirmation, each optimizer's best becomes its representative config
    with its mean over seeds: what the catalogue, ``GET /api/v1/best`` and later studies' warm
    starts see of it, never one lucky seed. An optimizer none of whose seeds finished keeps its
    search best."""
    verdict = verdict_of(session, study)
    if verdict is None:
        return
    pairs = {pair.optimizer: pair for pair in study.optimizers}
    for result in verdict.results:
        pair = pairs.get(result.optimizer)
        if pair is None or result.config is None or result.val.mean is None:
            continue
        pair.best_slot_id = int(result.config.key)
        pair.best_value = result.val.mean


# --------------------------------------------------------------------------- the race
#
# The confirmation is a race (studies.verdict.race): seeds go out in rounds, one look of the
# race at a time, and only to optimizers whose answer is still open. The race is a pure function
# of the seeds' values, replayed from the slot record after every round: nothing but the margin
# (``StudyRow.confirm_equivalence``, resolved when the confirmation starts) is kept for it.


def race_design_of(study: StudyRow) -> RaceDesign:
    """The study's race: the margin it resolved, looks up to its cap of seeds per optimizer."""
    cap = max(2, study.confirm_seeds)
    looks = (*(n for n in DEFAULT_LOOKS if n < cap), cap)
    return RaceDesign(equivalence=float(study.confirm_equivalence or 0.0), looks=looks)


def _search_trials(session: Session, pair: StudyOptimizerRow) -> list[tuple[int, SearchTrial]]:
    """The pair's finished, complete search trials, best first then by slot: ``(slot, trial)``."""
    rows = session.execute(
        sa.select(TrialSlotRow.id, TrialSlotRow.value, TrialSlotRow.params)
        .where(
            TrialSlotRow.study_optimizer_id == pair.id,
            TrialSlotRow.state == SlotState.FINISHED,
            TrialSlotRow.outcome == SlotOutcome.COMPLETE,
            TrialSlotRow.value.is_not(None),
            sa.or_(TrialSlotRow.origin.is_(None), TrialSlotRow.origin != ConfigOrigin.CONFIRM),
        )
        .order_by(TrialSlotRow.id)
    ).all()
    return [
        (slot_id, SearchTrial(float(value), dict(params or {})))
        for slot_id, value, params in rows
        if params and math.isfinite(value)
    ]


def _seed_configs(source: int, params: dict[str, Any], count: int) -> list[dict[str, Any]]:
    return [{"params": params, "origin": ConfigOrigin.CONFIRM, "confirm_of": source}] * count


def start_confirmation(session: Session, study: StudyRow) -> int:
    """The search is over: resolve the race's margin (the request's, or a default derived from
    the metric and the search's values, stated in the verdict), choose each optimizer's configs
    (a second only when the search cannot tell it from the first,
    :func:`studies.verdict.configs_to_confirm`, at most ``confirm_top_k``) and plan the first
    look's seeds of each. Returns the seeds planned (0: nothing to confirm)."""
    trials = {pair.id: _search_trials(session, pair) for pair in study.optimizers}
    if study.confirm_equivalence is None:
        sign = 1.0 if study.direction == "maximize" else -1.0
        bests = [max((sign * t.value for _, t in found), default=None) for found in trials.values()]
        values = [sign * best for best in bests if best is not None]
        study.confirm_equivalence = default_equivalence(study.metric, values, study.direction)
    first_look = race_design_of(study).looks[0]
    planned = 0
    for pair in study.optimizers:
        found = trials[pair.id]
        if not found:
            continue
        choice = configs_to_confirm([t for _, t in found], study.direction,
                                    float(study.confirm_equivalence))  # fmt: skip
        chosen = [found[i] for i in choice.confirm[: max(1, study.confirm_top_k)]]
        configs = [c for slot_id, t in chosen for c in _seed_configs(slot_id, dict(t.params),
                                                                      first_look)]  # fmt: skip
        pair.planned_configs = configs
        pair.n_trials = pair.n_trials + len(configs)
        planned += len(configs)
    return planned


def _race_values(
    session: Session, study: StudyRow
) -> tuple[dict[str, list[float | None]], dict[str, int | None]]:
    """Per optimizer, the seeds of its representative config in the order they were given out
    (``None``: a seed that diverged), and which config that is (its search slot)."""
    pairs = {pair.id: pair for pair in study.optimizers}
    rows = session.execute(
        sa.select(
            TrialSlotRow.study_optimizer_id,
            TrialSlotRow.confirm_of,
            TrialSlotRow.outcome,
            TrialSlotRow.value,
        )
        .where(
            TrialSlotRow.study_optimizer_id.in_(list(pairs)),
            TrialSlotRow.origin == ConfigOrigin.CONFIRM,
            TrialSlotRow.state == SlotState.FINISHED,
        )
        .order_by(TrialSlotRow.id)
    ).all()
    seeds: dict[int, dict[int, list[float | None]]] = defaultdict(dict)
    for pair_id, source, outcome, value in rows:
        if source is None:
            continue
        finished = outcome == SlotOutcome.COMPLETE and value is not None and math.isfinite(value)
        seeds[pair_id].setdefault(source, []).append(float(value) if finished else None)
    values: dict[str, list[float | None]] = {}
    chosen: dict[str, int | None] = {}
    for pair_id, pair in pairs.items():
        configs = seeds.get(pair_id, {})
        # Two configs ran the first look: the better mean races on (studies.verdict).
        key = representative_config(
            {source: [v for v in found if v is not None] for source, found in configs.items()},
            study.direction,
        )
        chosen[pair.optimizer] = key
        values[pair.optimizer] = list(configs.get(key, [])) if key is not None else []
    return values, chosen


def race_of(session: Session, study: StudyRow) -> Race | None:
    """The race as its seeds stand, or ``None`` for a study without one (no confirmation, not
    started, or confirmed before the race: the all-pairs verdict judges those)."""
    if study.confirm_top_k <= 0 or study.confirm_equivalence is None:
        return None
    values, _ = _race_values(session, study)
    if not any(values.values()):
        return None
    return judge_race(values, study.direction, race_design_of(study))


def next_round(session: Session, study: StudyRow) -> int:
    """A round of the race ended: judge it, and plan the seeds each optimizer still racing
    needs for the next look, of its representative config. Returns the seeds planned (0: the
    race is settled and the study completes)."""
    values, chosen = _race_values(session, study)
    race = judge_race(values, study.direction, race_design_of(study))
    if race.settled:
        return 0
    planned = 0
    for pair in study.optimizers:
        needed = race.next_seeds.get(pair.optimizer, 0)
        source = chosen.get(pair.optimizer)
        if needed <= 0 or source is None:
            continue
        params = session.scalar(sa.select(TrialSlotRow.params).where(TrialSlotRow.id == source))
        configs = _seed_configs(source, dict(params or {}), needed)
        pair.planned_configs = [*(pair.planned_configs or []), *configs]
        pair.n_trials = pair.n_trials + needed
        planned += needed
    return planned
