"""Paging while the history grows: a client that pages through a study's trials, the study list
or the catalogue's study names while trials are being finished sees a stable order, no item
twice and none of those that existed when it started left out.

One thread finishes trials through the product's ask/tell path (claim, start, tell Optuna,
finish) while another pages through, a few items a page, again and again until the writer is
done; each pass is checked against the full listing read after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest

from service.config import Settings
from service.store.database import Database, make_optuna_storage
from service.studies import best_configs, progress, trial_list
from service.studies.admin import create_study
from service.studies.requests import StudyRequest
from service.trials import lifecycle, protocol
from service.vocabulary import TrialState
from tests.service.rows import start_sampled, study_id_of

PAGE = 3
WRITES = 24
OPTIMIZERS_OF_STUDY = ["sgd", "momentum", "adam"]


@pytest.fixture
def storage(db: Database) -> Iterator[optuna.storages.RDBStorage]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_optuna_storage(db.url)
    settings = Settings(database_url=db.url)
    for name in ("first", "second", "third", "fourth", "fifth"):
        create_study(
            db=db,
            storage=storage,
            settings=settings,
            request=StudyRequest(
                name=name,
                task="external",
                model="shared",
                confirm={"top_k": 0},
                optimizers=OPTIMIZERS_OF_STUDY,
                n_trials=50,
                sampler="random",
                pruner="none",
                seed=0,
                metric="loss",
                direction="minimize",
            ),
        )
    yield storage
    storage.engine.dispose()


def run_trials(db: Database, storage: Any, name: str, count: int) -> None:
    """``count`` trials of study ``name``, as ask then tell run them."""
    study_id = study_id_of(db, name)
    for i in range(count):
        claim = lifecycle.claim_slot(
            db, holder="test", study_id=study_id, external=True, lease_seconds=600
        )
        assert claim is not None
        trial, _ = start_sampled(db, storage, claim)
        frozen = trial.study.tell(trial.number, float(i % 7))
        assert lifecycle.finish_slot(
            db, claim.slot_id, protocol.ending_of(frozen), token=claim.claim_token
        )


Page = Callable[[int, int], tuple[list[Any], int]]


def page_through(page: Page) -> list[Any]:
    """Every item, a page at a time (offset paging, as a client does)."""
    seen: list[Any] = []
    offset = 0
    while True:
        items, _ = page(PAGE, offset)
        seen.extend(items)
        if len(items) < PAGE:
            return seen
        offset += PAGE


def check_paging_while_writing(
    db: Database, storage: Any, page: Page, *, writes: Callable[[], None]
) -> None:
    """Page through again and again while ``writes`` runs in another thread; each pass must
    list every item that existed before it began, once, in the order of the listing after it."""
    errors: list[BaseException] = []
    done = threading.Event()
    paging = threading.Event()  # the first pass has begun: the writes start
    first_pass_seen = threading.Event()  # ... and the writer ends no sooner than its middle

    def write() -> None:
        try:
            paging.wait(60)
            writes()
            # However slow the machine, the first pass runs while the trials are being added.
            first_pass_seen.wait(120)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    passes = 0
    try:
        while not done.is_set() or passes == 0:
            paging.set()
            before = page_through(page)
            seen = page_through(page)
            first_pass_seen.set()
            after = page_through(page)
            passes += 1
            assert len(seen) == len(set(seen)), f"an item was listed twice: {seen}"
            assert set(before) <= set(seen), f"left out: {set(before) - set(seen)}"
            assert set(seen) <= set(after)
            assert [item for item in after if item in set(seen)] == seen, "the order changed"
    finally:
        paging.set()
        first_pass_seen.set()
        writer.join()
    assert not errors, errors


def _trial_key(item: Any) -> tuple[str, int | None, str]:
    return (item.optimizer, item.number, str(item.started_at))


@pytest.mark.parametrize(
    "filters",
    [{}, {"optimizer": "momentum"}, {"state": TrialState.COMPLETE}],
    ids=["all", "optimizer", "state"],
)
def test_trials_pages_while_trials_are_added(
    db: Database, storage: Any, filters: dict[str, Any]
) -> None:
    run_trials(db, storage, "first", 7)

    def page(limit: int, offset: int) -> tuple[list[Any], int]:
        found = trial_list.list_trials(
            db, storage, name="first", limit=limit, offset=offset, **filters
        )
        # Only numbered trials: one that is waiting for its number is not yet a trial to keep.
        return [_trial_key(t) for t in found.items if t.number is not None], found.total

    check_paging_while_writing(
        db, storage, page, writes=lambda: run_trials(db, storage, "first", WRITES)
    )


def test_the_study_list_pages_while_trials_are_added(db: Database, storage: Any) -> None:
    run_trials(db, storage, "second", 2)

    def page(limit: int, offset: int) -> tuple[list[Any], int]:
        found = progress.list_studies(db, task="external", limit=limit, offset=offset)
        return [s.name for s in found.items], found.total

    def writes() -> None:
        for name in ("first", "third", "fifth"):
            run_trials(db, storage, name, WRITES // 3)

    check_paging_while_writing(db, storage, page, writes=writes)
    assert page_through(page) == ["fifth", "fourth", "third", "second", "first"]


def test_the_catalogue_pages_its_studies_while_trials_are_added(db: Database, storage: Any) -> None:
    run_trials(db, storage, "second", 2)

    def page(limit: int, offset: int) -> tuple[list[Any], int]:
        found = best_configs.best_for_task(
            db, task="external", model="shared", metric="loss", limit=limit, offset=offset
        )
        return list(found.studies), len(found.studies)

    def writes() -> None:
        for name in ("fourth", "first"):
            run_trials(db, storage, name, WRITES // 2)

    check_paging_while_writing(db, storage, page, writes=writes)
    assert page_through(page) == ["fifth", "fourth", "third", "second", "first"]
