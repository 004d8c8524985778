"""What a report shows, as plain values: the service fills these from its tables and Optuna.

Nothing here reads a database; ``render_report`` turns a ``StudyReport`` into one HTML page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.vocabulary import FINAL_STATUSES as VOCABULARY_FINAL_STATUSES
from service.vocabulary import StudyPhase
from studies.importance import ParamImportances
from studies.verdict import StudyVerdict

# The vocabulary is the service's (service.vocabulary): phases in order, and final statuses.
PHASES = tuple(str(phase) for phase in StudyPhase)
FINAL_STATUSES = frozenset(str(status) for status in VOCABULARY_FINAL_STATUSES)
TRIAL_STATES = ("complete", "pruned", "failed", "running", "waiting")


@dataclass(frozen=True)
class Progress:
    """Finished out of planned trials of one phase (``total`` 0: the phase is off)."""

    done: int
    total: int
    running: int = 0

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


@dataclass(frozen=True)
class TrialPoint:
    """One search trial of one optimizer.

    Attributes:
        number: Optuna's trial number.
        state: One of ``TRIAL_STATES`` (running and waiting trials are not drawn).
        value: The validation metric: final (complete), last reported (pruned), else ``None``.
            A non-finite value is drawn like a missing one.
        epochs: Epochs it trained (what it cost), whatever its state.
        lr: Its learning rate; ``None`` leaves it out of the lr figure.
        params: Its hyperparameters (shown on hover).
        note: Why it was pruned or failed, if known.
    """

    number: int
    state: str
    value: float | None
    epochs: int
    lr: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def has_value(self) -> bool:
        return self.value is not None and math.isfinite(self.value)


@dataclass(frozen=True)
class OptimizerReport:
    """What the report shows of one optimizer.

    Attributes:
        name: The optimizer's registry name.
        trials: Its search trials in the order they finished (the best-so-far line follows it).
        importance: Which hyperparameters mattered in its search; ``None`` while not computed.
        curves: The validation metric per epoch of each seed of its representative confirmed
            config (one list per seed; a seed stopped early is shorter); empty before any.
        search: Its search progress.
        confirm: Its confirmation progress.
    """

    name: str
    trials: list[TrialPoint] = field(default_factory=list)
    importance: ParamImportances | None = None
    curves: list[list[float]] = field(default_factory=list)
    search: Progress | None = None
    confirm: Progress | None = None


@dataclass(frozen=True)
class StudyReport:
    """Everything one report page shows.

    Attributes:
        name: The study's name (user input: always escaped).
        task: Its task.
        metric: The validation metric compared.
        direction: ``"maximize"`` or ``"minimize"``.
        status: ``queued``, ``running``, ``completed``, ``stopped`` or ``failed``.
        phase: One of ``PHASES``.
        search: Search progress over all optimizers.
        confirm: Confirmation progress over all optimizers (``total`` 0: confirmation is off).
        optimizers: In the study's order (which fixes each optimizer's colour).
        verdict: The verdict with each optimizer's representative config; ``None`` before one.
        test_metric: Name of the test metric shown beside the validation one.
        epochs: Epochs per trial.
        eta_seconds: Estimated time to the end, if known.
        generated_at: When the page was made (shown, timezone-aware preferred).
        refresh_seconds: How often a live page reloads itself.
        dashboard_url: Link to the study in optuna-dashboard (http or https only, else dropped).
    """

    name: str
    task: str
    metric: str
    direction: str
    status: str
    phase: str
    search: Progress
    confirm: Progress
    optimizers: list[OptimizerReport] = field(default_factory=list)
    verdict: StudyVerdict | None = None
    test_metric: str | None = None
    epochs: int | None = None
    eta_seconds: float | None = None
    generated_at: datetime | None = None
    refresh_seconds: int = 10
    dashboard_url: str | None = None

    @property
    def live(self) -> bool:
        """The study still runs: the page says so and reloads itself."""
        return self.status not in FINAL_STATUSES
