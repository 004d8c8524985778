"""What optuna-dashboard shows of a study's answer: once a study completes, its verdict (or its
search's answer) is written into the user attributes of each of its Optuna studies, so that a
person reading the dashboard sees the same answer as the API, the CLI and the report.

Run by the API's background loop (:func:`service.app`'s janitor): a completed study is published
once (``verdict_published_at``), whichever process finished its last trial.
"""

from __future__ import annotations

import optuna
import sqlalchemy as sa

from service.store import optuna_bridge
from service.store.database import Database, db_now
from service.store.tables import StudyRow
from service.studies.best_configs import best_slots, rank, study_answer
from service.vocabulary import StudyStatus

# Completed studies published per pass (the rest wait for the next one).
PUBLISH_BATCH = 20


def publish_answers(db: Database, storage: optuna.storages.BaseStorage) -> int:
    """Write the answer of every completed study not yet published into its Optuna studies'
    user attributes (``verdict``, ``winner``, ``leaders``, ``answer_basis``). Returns how many
    studies were published."""
    with db.read() as session:
        studies = session.scalars(
            sa.select(StudyRow)
            .where(
                StudyRow.status == StudyStatus.COMPLETED,
                StudyRow.verdict_published_at.is_(None),
            )
            .limit(PUBLISH_BATCH)
        ).all()
        pending = []
        for study in studies:
            pairs = list(study.optimizers)
            answer = study_answer(
                session, study, rank(best_slots(session, pairs).values(), study.direction)
            )
            # The sentence last: a reader that sees it sees the rest.
            attrs = {
                "winner": answer.winner,
                "leaders": answer.leaders,
                "answer_basis": answer.basis,
                "verdict": answer.sentence,
            }
            pending.append((study.id, [pair.optuna_study_name for pair in pairs], attrs))
    for study_id, names, attrs in pending:
        for name in names:
            optuna_bridge.set_study_attrs(storage, name, attrs)
        with db.write() as session:
            session.execute(
                sa.update(StudyRow)
                .where(StudyRow.id == study_id, StudyRow.verdict_published_at.is_(None))
                .values(verdict_published_at=db_now())
            )
    return len(pending)
