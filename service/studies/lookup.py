"""Finding a study by name, for every read."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.errors import StudyNotFound
from service.store.tables import StudyRow


def study_row(session: Session, name: str) -> StudyRow:
    study = session.scalar(sa.select(StudyRow).where(StudyRow.name == name))
    if study is None:
        raise StudyNotFound(name)
    return study
