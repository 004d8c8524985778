"""The words the service speaks, each defined once: study statuses, slot states, trial states as the
API shows them, how a slot ended, directions and where a trial's config came from.

The API's schemas, the client, the CLI and the tables all use these enums; their values are what
travels in JSON and what is stored in the database.
"""

from __future__ import annotations

from enum import StrEnum


class StudyStatus(StrEnum):
    """Where a study is in its life.

    ``queued`` -> ``running`` (its first slot was claimed) -> ``completed`` (every optimizer has
    its ``n_trials`` finished trials) | ``stopped`` (by a user) | ``failed`` (too many failed
    trials). ``deleting``: a DELETE is waiting for the study's running trials to let go.
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETING = "deleting"

    @property
    def accepts_trials(self) -> bool:
        return self in ACCEPTING_TRIALS

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


ACCEPTING_TRIALS = frozenset({StudyStatus.QUEUED, StudyStatus.RUNNING})
FINAL_STATUSES = frozenset({StudyStatus.COMPLETED, StudyStatus.STOPPED, StudyStatus.FAILED})


class SlotState(StrEnum):
    """Where one attempt at a trial is: the service's one record of a trial's life.

    ``claimed`` (a worker or an ask/tell client took it) -> ``running`` (its Optuna trial exists
    and is recorded on the slot) -> ``finished`` (COMPLETE or PRUNED: it counts towards
    ``n_trials``) | ``released`` (it failed, its holder died, its lease ran out or its study is
    being deleted: the slot goes back and another attempt runs it). Legal transitions:
    :data:`service.trials.lifecycle.TRANSITIONS`.
    """

    CLAIMED = "claimed"
    RUNNING = "running"
    FINISHED = "finished"
    RELEASED = "released"


HELD_SLOT_STATES = frozenset({SlotState.CLAIMED, SlotState.RUNNING})


class SlotOutcome(StrEnum):
    """How a slot ended: the first two finish it, the others release it."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"  # the trial raised, or the client told it failed
    LOST = "lost"  # its worker stopped sending heartbeats
    EXPIRED = "expired"  # its ask/tell lease ran out
    REVOKED = "revoked"  # its study is being deleted


FINISHING_OUTCOMES = frozenset({SlotOutcome.COMPLETE, SlotOutcome.PRUNED})


class TrialState(StrEnum):
    """A trial as the API lists it (one per slot that reached Optuna)."""

    WAITING = "waiting"
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


class StudyPhase(StrEnum):
    """What a study is doing: ``searching`` (the sampler), then ``confirming`` (the top configs
    of each optimizer re-trained on fresh seeds), then ``completed`` (the verdict stands)."""

    SEARCHING = "searching"
    CONFIRMING = "confirming"
    COMPLETED = "completed"


class TrialPhase(StrEnum):
    """Which phase of its study a trial serves: the ``search`` (any config a search tries) or the
    ``confirm``ation (a config re-trained on a fresh seed the service chose; never pruned)."""

    SEARCH = "search"
    CONFIRM = "confirm"

    @classmethod
    def of(cls, origin: str | None) -> TrialPhase:
        """The phase of a trial whose config came from ``origin``."""
        return cls.CONFIRM if origin == ConfigOrigin.CONFIRM else cls.SEARCH


class Direction(StrEnum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class ConfigOrigin(StrEnum):
    """Where a trial's hyperparameters came from."""

    PORTFOLIO = "portfolio"  # shipped configs that do well across tasks
    CATALOGUE = "catalogue"  # best known configs of this task from earlier studies
    LR_RANGE = "lr_range"  # a learning-rate range test on the task
    SAMPLER = "sampler"  # the study's sampler
    RETRY = "retry"  # the config of an ask/tell trial whose lease ran out, offered again
    CONFIRM = "confirm"  # a top config re-trained on a fresh seed
    IMPORT = "import"  # a trial the client trained elsewhere and brought in whole


EXTERNAL_TASK = "external"
"""The pseudo-task of studies whose trials the client's own code trains (ask/tell)."""
