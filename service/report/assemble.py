"""A study's report data, read from the slot record and Optuna: the search trials of each
optimizer in the order their slots finished (the database's clock), the seed curves of each
optimizer's representative confirmed config, which hyperparameters mattered, and the verdict.

A report is a view of the whole study, so it reads every trial of it (once per page load).
"""

from __future__ import annotations

from datetime import UTC, datetime

import optuna
import sqlalchemy as sa

from service.errors import StudyNotFound
from service.report.data import OptimizerReport, Progress, StudyReport
from service.report.from_optuna import seed_curve, trial_point
from service.store import optuna_bridge
from service.store.database import Database
from service.store.tables import StudyRow, TrialSlotRow
from service.studies.confirmation import verdict_of
from service.vocabulary import ConfigOrigin, SlotState
from studies.importance import param_importances
from studies.tasks import available_tasks


def study_report(
    db: Database,
    storage: optuna.storages.BaseStorage,
    name: str,
    *,
    dashboard_url: str | None = None,
) -> StudyReport:
    """Everything the report page of study ``name`` shows.

    Raises:
        StudyNotFound: no such study.
    """
    with db.read() as session:
        study = session.scalar(sa.select(StudyRow).where(StudyRow.name == name))
        if study is None:
            raise StudyNotFound(name)
        pairs = list(study.optimizers)
        slots = session.execute(
            sa.select(
                TrialSlotRow.study_optimizer_id,
                TrialSlotRow.trial_id,
                TrialSlotRow.origin,
                TrialSlotRow.confirm_of,
                TrialSlotRow.state,
            )
            .where(
                TrialSlotRow.study_optimizer_id.in_([p.id for p in pairs]),
                TrialSlotRow.trial_id.is_not(None),
            )
            .order_by(TrialSlotRow.ended_at.asc().nulls_last(), TrialSlotRow.id)
        ).all()
        verdict = verdict_of(session, study)
        info = {
            "name": study.name,
            "task": study.task,
            "metric": study.metric,
            "direction": study.direction,
            "status": study.status,
            "phase": study.phase,
            "epochs": study.epochs,
        }
        optuna_names = {p.id: p.optuna_study_name for p in pairs}
        progress = [
            (
                p.id,
                p.optimizer,
                p.search_trials or p.n_trials,
                p.n_trials - (p.search_trials or p.n_trials),
                p.finished,
            )
            for p in pairs
        ]
    chosen = {}
    if verdict is not None:
        chosen = {r.optimizer: r.config.key for r in verdict.results if r.config is not None}
    optimizers = []
    by_pair: dict[int, list] = {}
    for slot in slots:
        by_pair.setdefault(slot.study_optimizer_id, []).append(slot)
    for pair_id, optimizer, search_total, confirm_total, finished in progress:
        # The whole optimizer's trials in one read (a report shows them all), then in the
        # order their slots finished.
        trials = optuna_bridge.all_trials(storage, optuna_names[pair_id])
        frozen = {
            slot.trial_id: (slot, trials[slot.trial_id])
            for slot in by_pair.get(pair_id, [])
            if slot.trial_id in trials
        }
        search = [t for s, t in frozen.values() if s.origin != ConfigOrigin.CONFIRM]
        curves = [
            seed_curve(t, info["metric"])
            for s, t in frozen.values()
            if s.origin == ConfigOrigin.CONFIRM
            and s.confirm_of == chosen.get(optimizer)
            and s.state == SlotState.FINISHED
        ]
        optimizers.append(
            OptimizerReport(
                name=optimizer,
                trials=[trial_point(t) for t in search],
                importance=param_importances(search, info["direction"]),
                curves=[c for c in curves if c],
                search=Progress(min(finished, search_total), search_total),
                confirm=Progress(max(0, finished - search_total), confirm_total),
            )
        )
    task = available_tasks().get(info["task"])
    search_done = sum(o.search.done for o in optimizers if o.search)
    confirm_done = sum(o.confirm.done for o in optimizers if o.confirm)
    return StudyReport(
        name=info["name"],
        task=info["task"],
        metric=info["metric"],
        direction=info["direction"],
        status=info["status"],
        phase=info["phase"],
        search=Progress(search_done, sum(total for _, _, total, _, _ in progress)),
        confirm=Progress(confirm_done, sum(total for _, _, _, total, _ in progress)),
        optimizers=optimizers,
        verdict=verdict,
        test_metric=task.test_metric(info["metric"]) if task is not None else None,
        epochs=info["epochs"],
        generated_at=datetime.now(UTC),
        dashboard_url=dashboard_url,
    )
