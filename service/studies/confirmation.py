"""The confirmation phase's results, read from the slot record: each confirmed config's figures
over its fresh seeds, and the verdict (:mod:`studies.verdict`).

Confirmation slots carry ``origin = "confirm"`` and ``confirm_of``, the search slot whose config
they re-train; a study's confirmation is ``top_k x seeds`` slots per optimizer, so reading it
costs the same whatever the history.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from optim_core.registry import OPTIMIZERS
from service.store.tables import StudyOptimizerRow, StudyRow, TrialSlotRow
from service.vocabulary import ConfigOrigin, SlotOutcome, SlotState
from studies.tasks import available_tasks
from studies.verdict import ConfirmedConfig, StudyVerdict, study_verdict


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
    """The study's verdict, or ``None`` when it has no confirmation (or it has not started)."""
    if study.confirm_top_k <= 0:
        return None
    pairs = list(study.optimizers)
    configs = confirmed_configs(session, pairs, study.direction)
    if not any(configs.values()):
        return None
    task = available_tasks().get(study.task)
    test_metric = task.test_metric(study.metric) if task is not None else None
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
