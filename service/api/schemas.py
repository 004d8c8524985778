"""Request and response models of the REST API (the HTTP boundary only).

``...Create`` / ``...Request`` models are what a client sends (unknown fields are refused);
``...Out`` models are what it gets back. Inside the service the same data travels as dataclasses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from service.studies.defaults import DEFAULT_CONFIRM
from service.vocabulary import Direction, StudyPhase, StudyStatus, TrialState
from studies.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

# Integer columns are 32-bit on PostgreSQL: every integer a client sends is bounded by this.
INT32_MAX = 2**31 - 1
MAX_LEASE_SECONDS = 7 * 24 * 3600.0
# Leases and claim tokens are 32 URL-safe characters; anything longer is not one of ours.
MAX_TOKEN_LENGTH = 64

# Names kept for the routes' type hints.
StudyStatusName = StudyStatus
TrialStateName = TrialState


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfirmCreate(_Request):
    """The confirmation phase: after the search, the ``top_k`` configs of each optimizer are
    re-trained on ``seeds`` fresh training seeds; ``{"top_k": 0}`` skips it. A key left out
    takes its default (``DEFAULT_CONFIRM``)."""

    top_k: StrictInt | None = Field(
        None,
        ge=0,
        le=10,
        description=f"Configs per optimizer to confirm; default {DEFAULT_CONFIRM.top_k}.",
    )
    seeds: StrictInt | None = Field(
        None,
        ge=2,
        le=20,
        description="The race's cap: fresh training seeds per optimizer at most; default "
        f"{DEFAULT_CONFIRM.seeds}.",
    )
    equivalence: FiniteFloat | None = Field(
        None,
        gt=0,
        description="The practical-equivalence margin, in the metric's units: optimizers whose "
        "difference lies within it are declared tied and stop getting seeds. Default: half a "
        "percentage point for an accuracy, else 1% of the best search value (stated in the "
        "verdict).",
    )


class StudyCreate(_Request):
    """A study request: which optimizers to tune on which task, and how."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "digits-compare",
                    "task": "digits_mlp",
                    "optimizers": ["sgd", "momentum", "adam"],
                    "n_trials": 40,
                    "epochs": 20,
                    "sampler": "tpe",
                    "pruner": "hyperband",
                    "seed": 0,
                    "metric": "val_accuracy",
                    "search_space": {
                        "adam": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "batch_size": 64}
                    },
                    "confirm": DEFAULT_CONFIRM.to_json(),
                }
            ]
        },
    )

    name: str = Field(
        description="Unique name: 1-64 letters, digits, '_' or '-'; the first a letter or digit."
    )
    task: str = Field(description="A task of GET /api/v1/tasks, or 'external' for ask/tell.")
    optimizers: list[str] = Field(
        min_length=1, description="Optimizers of GET /api/v1/optimizers, each listed once."
    )
    # Upper limits are the server's (HPT_MAX_TRIALS, HPT_MAX_EPOCHS), checked with the rest.
    n_trials: StrictInt = Field(
        ge=1, le=INT32_MAX, description="Finished trials per optimizer, exactly."
    )
    epochs: StrictInt | None = Field(
        None, ge=1, le=INT32_MAX, description="Epochs per trial; default: the task's."
    )
    sampler: str = Field(
        DEFAULT_SAMPLER,
        description="tpe (multivariate, constant liar), sobol_tpe (quasi-random points, then "
        "TPE), random, cmaes, qmc, gp or grid.",
    )
    pruner: str = Field(
        DEFAULT_PRUNER, description="hyperband (matched to the epochs), none, median or sha."
    )
    seed: StrictInt | None = Field(
        None, ge=0, le=INT32_MAX, description="Makes the samplers repeatable."
    )
    metric: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="The metric optimised; default: the task's. Required for 'external'.",
    )
    direction: Direction | None = Field(
        None, description="Only for task 'external' (required there): minimize or maximize."
    )
    search_space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per optimizer, overrides of its default space: {key: {low, high, log}}, "
        "{key: {choices: [...]}} or {key: fixed value}.",
    )
    warm_start: Literal["auto", "none"] | Annotated[list[str], Field(max_length=50)] = Field(
        "auto",
        description="What to try first: 'auto' (the best configs of this task from earlier "
        "studies, then a portfolio of configs that do well across tasks), 'none' (the sampler "
        "from the first trial), or a list of earlier study names to start from.",
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Task 'external': the name of your model. Warm starts, the catalogue and "
        "GET /api/v1/best share configs only between studies of the same model and metric; "
        "default: the study's name (a model of its own). Built-in tasks: the task's name.",
    )
    confirm: ConfirmCreate | None = Field(
        None,
        description="Re-train the top configs on fresh seeds before the verdict; default "
        f"{DEFAULT_CONFIRM.describe()}, for every task.",
    )


class AskRequest(_Request):
    """Options of an ask (all optional)."""

    lease_seconds: float | None = Field(
        None,
        gt=0,
        le=MAX_LEASE_SECONDS,
        description="Seconds until the trial fails unless told (each report renews it); "
        "default: the server's HPT_LEASE_SECONDS.",
    )


class ReportRequest(_Request):
    """An intermediate value of a running trial."""

    step: StrictInt = Field(
        ge=0, le=INT32_MAX, description="The step (epoch) the value belongs to."
    )
    value: FiniteFloat = Field(description="The metric at that step.")
    lease: str = Field(
        min_length=1, max_length=MAX_TOKEN_LENGTH, description="The lease ask returned."
    )


class TellRequest(_Request):
    """How a trial ended: ``{"value": v}``, or ``{"state": "pruned"}`` or ``"failed"``."""

    value: FiniteFloat | None = Field(None, description="The final metric of a complete trial.")
    state: Literal["complete", "pruned", "failed"] | None = Field(
        None, description="'pruned' or 'failed' without a value; 'complete' (the default) with one."
    )
    lease: str = Field(
        min_length=1, max_length=MAX_TOKEN_LENGTH, description="The lease ask returned."
    )

    @model_validator(mode="after")
    def _value_or_state(self) -> TellRequest:
        if self.outcome == "complete" and self.value is None:
            raise ValueError(
                "send 'value' (the trial's final metric), or 'state': 'pruned' or 'failed'"
            )
        if self.outcome != "complete" and self.value is not None:
            raise ValueError(f"a {self.outcome} trial has no 'value'; leave it out")
        return self

    @property
    def outcome(self) -> str:
        return self.state or "complete"


# Trials per import request: each takes a few writes, so a request of this many is answered
# within seconds.
MAX_IMPORTED_TRIALS = 100
# Per imported trial: hyperparameters and steps with a value.
MAX_IMPORTED_PARAMS = 64
MAX_IMPORTED_STEPS = 10_000
ParamValue = StrictBool | StrictInt | FiniteFloat | Annotated[str, Field(max_length=64)]
Step = Annotated[int, Field(ge=0, le=INT32_MAX)]


class TrialImportIn(_Request):
    """One finished trial trained elsewhere."""

    optimizer: str = Field(max_length=32, description="One of the study's optimizers.")
    params: dict[Annotated[str, Field(max_length=64)], ParamValue] = Field(
        max_length=MAX_IMPORTED_PARAMS,
        description="Its hyperparameters, as ask returns them; inside the study's space.",
    )
    state: Literal["complete", "pruned"] = Field(
        "complete", description="'complete' with a value, or 'pruned' without one."
    )
    value: FiniteFloat | None = Field(None, description="The final metric of a complete trial.")
    intermediate_values: dict[Step, FiniteFloat] = Field(
        default_factory=dict,
        max_length=MAX_IMPORTED_STEPS,
        description="The metric per step (epoch), as report would have sent it.",
    )


class ImportRequest(_Request):
    """Finished trials to bring into an external study, imported in order."""

    trials: list[TrialImportIn] = Field(min_length=1, max_length=MAX_IMPORTED_TRIALS)


class ImportedTrialOut(BaseModel):
    optimizer: str
    number: int = Field(description="Its trial number, as ask would have given it.")


class ImportOut(BaseModel):
    study: str
    imported: list[ImportedTrialOut]


class RenewRequest(_Request):
    """Keep a trial's lease while the client trains longer than it."""

    lease: str = Field(
        min_length=1, max_length=MAX_TOKEN_LENGTH, description="The lease ask returned."
    )
    lease_seconds: float | None = Field(
        None,
        gt=0,
        le=MAX_LEASE_SECONDS,
        description="Seconds from now; default: the lease's length when it was asked.",
    )


class RenewOut(BaseModel):
    lease_expires_at: datetime


class ErrorOut(BaseModel):
    """Every error but a validation error."""

    detail: str = Field(description="What went wrong and what to do about it.")


class FieldProblemOut(BaseModel):
    loc: list[str | int] = Field(description="Where: ['body', 'search_space', 'adam'] ...")
    msg: str = Field(description="What is wrong there and how to fix it.")
    type: str


class ValidationErrorOut(BaseModel):
    """A request that cannot be carried out as sent (422)."""

    detail: list[FieldProblemOut]
    message: str = Field(description="All problems in one line.")


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]
    detail: str | None = None


class OptimizerOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    class_name: str = Field(alias="class", description="The optim_core class.")
    description: str
    full_batch: bool = Field(description="Trains on the whole training set per step.")
    default_space: dict[str, Any]
    tunable: list[str] = Field(description="Keys a study's search_space may set.")


class TaskOut(BaseModel):
    name: str
    description: str
    metrics: dict[str, Direction] = Field(description="Selectable metrics and their direction.")
    default_metric: str | None
    direction: Direction | None = Field(description="Direction of the default metric.")
    default_epochs: int | None
    external: bool = Field(description="Trials run by the client through ask/tell.")


class SeedSummaryOut(BaseModel):
    """A figure over training seeds: mean, spread and a Student-t interval of the mean."""

    n: int = Field(description="Seeds.")
    mean: float | None
    std: float | None = Field(description="Sample standard deviation; null below 2 seeds.")
    ci_low: float | None = Field(description="Lower end of the confidence interval of the mean.")
    ci_high: float | None
    confidence: float = Field(description="Level of the interval (0.95).")
    values: list[float] = Field(description="Each seed's figure.")


class ConfirmedOut(BaseModel):
    """A config re-trained on fresh seeds in the confirmation phase."""

    value: SeedSummaryOut = Field(description="The study's (validation) metric over seeds.")
    test_value: SeedSummaryOut = Field(description="The test metric over the same seeds.")
    status: str = Field(
        description="In the verdict: best, tied, worse, or no_seeds (not compared); "
        "'confirmed' in the catalogue."
    )


class BestTrialOut(BaseModel):
    study: str
    optimizer: str
    number: int = Field(description="Trial number within the optimizer's Optuna study.")
    value: float = Field(
        description="The study metric (validation) of this config: its mean over the "
        "confirmation's seeds once confirmed, else its search run's."
    )
    search_value: float | None = Field(
        None, description="What its search trial reached (one run, one seed)."
    )
    params: dict[str, Any] = Field(description="Hyperparameters, as the optimizer takes them.")
    test_value: float | None = Field(
        description="The matching test metric (measured once per run): its mean over the seeds "
        "once confirmed."
    )
    test_metrics: dict[str, Any]
    python: str | None = Field(description="The line of Python that builds this optimizer.")
    completed_at: datetime | None
    origin: str | None = Field(None, description="Where this config came from.")
    confirmed: ConfirmedOut | None = Field(
        None,
        description="Its figures over fresh seeds, once confirmed (n 0: none of its seeds "
        "finished, so it was not compared).",
    )


class OptimizerProgressOut(BaseModel):
    optimizer: str
    optuna_study_name: str
    n_trials: int = Field(description="Slots to finish: the search's, then the confirmation's.")
    search_trials: int = Field(description="Of them, the search's.")
    confirm_trials: int = Field(description="Of them, the confirmation's (known once it starts).")
    total: int = Field(
        description="The trials this optimizer will finish in all: n_trials, plus, while "
        "searching, the confirmation's to come (top_k x seeds at most)."
    )
    finished: int = Field(description="complete + pruned; reaches n_trials exactly.")
    complete: int
    pruned: int
    running: int
    failed: int = Field(description="Failed trials; their slots were run again.")
    waiting: int
    search_space: dict[str, Any]
    best: BestTrialOut | None


class ProgressOut(BaseModel):
    finished: int
    total: int
    fraction: float


class EtaOut(BaseModel):
    seconds: float | None = Field(description="Seconds until done; null when unknown.")
    reason: str | None = Field(description="Why seconds is null.")
    mean_trial_seconds: float | None
    slots_left: int
    live_workers: int


class StudyOut(BaseModel):
    name: str
    task: str
    model: str | None = Field(None, description="The model tuned (a built-in task's own name).")
    metric: str
    direction: Direction
    epochs: int | None
    n_trials: int = Field(description="Per optimizer.")
    sampler: str
    pruner: str
    seed: int | None
    status: StudyStatusName
    phase: StudyPhase = Field(description="searching, confirming, completed.")
    confirm: dict[str, Any] = Field(
        description="The confirmation: top_k (configs at most), seeds (the race's cap per "
        "optimizer) and equivalence (its margin, resolved when the confirmation starts)."
    )
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    optimizers: list[OptimizerProgressOut]
    progress: ProgressOut
    best: BestTrialOut | None = Field(
        description="The best single search run so far over all optimizers (one run: the "
        "study's answer is 'winner'/'leaders'/'answer')."
    )
    winner: str | None = Field(
        None, description="The winner, only when the verdict names one (see BestOut.winner)."
    )
    leaders: list[str] = Field(default_factory=list, description="The tied leaders.")
    basis: Literal["verdict", "search", "catalogue", "none"] = Field(
        "none", description="What the answer rests on: the verdict's seeds or single search runs."
    )
    answer: str = Field("", description="The study's answer in one sentence.")
    eta: EtaOut


class StudySummaryOut(BaseModel):
    name: str
    task: str
    metric: str
    direction: Direction
    status: StudyStatusName
    optimizers: list[str]
    n_trials: int
    finished: int
    total: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class StudyPageOut(BaseModel):
    items: list[StudySummaryOut]
    total: int
    limit: int
    offset: int


class TrialOut(BaseModel):
    optimizer: str
    number: int | None = Field(description="Optuna's trial number; null while waiting to start.")
    state: TrialStateName
    value: float | None
    params: dict[str, Any]
    origin: str | None = Field(
        None,
        description="Where its hyperparameters came from: portfolio, catalogue, lr_range, "
        "sampler or retry.",
    )
    test_value: float | None
    test_metrics: dict[str, Any] | None
    epochs_run: int | None
    pruned_reason: str | None
    error: str | None
    worker: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    intermediate_values: dict[int, float] = Field(description="Reported value per step.")
    curves: dict[str, Any] | None = Field(description="Per-epoch curves of a trained trial.")


class TrialPageOut(BaseModel):
    items: list[TrialOut]
    total: int
    limit: int
    offset: int


class BestOut(BaseModel):
    task: str
    model: str | None = Field(None, description="The model compared (a built-in task's own name).")
    metric: str | None
    direction: Direction | None
    studies: list[str] = Field(description="The studies compared.")
    optimizers: list[BestTrialOut] = Field(
        description="Best config per optimizer, best first; optimizers without a complete "
        "trial are left out."
    )
    winner: BestTrialOut | None = Field(
        description="Only the verdict names a winner: the optimizer better than every other "
        "beyond seed noise (null when the leaders are tied, or while the confirmation runs). "
        "Without a confirmation: the one strictly best search run of a completed study; equal "
        "values are a tie (null)."
    )
    leaders: list[str] = Field(
        default_factory=list,
        description="The tied leaders: optimizers not worse than the best beyond noise (or at "
        "the best single value, without a verdict).",
    )
    basis: Literal["verdict", "search", "catalogue", "none"] = Field(
        "none",
        description="What the answer rests on: the verdict's seeds, single search runs, or the "
        "best configs of several studies (the catalogue).",
    )
    answer: str = Field("", description="The answer in one sentence, as every surface says it.")
    verdict: dict[str, Any] | None = Field(
        None,
        description="The verdict of the confirmation: outcome (winner, tied, single, none), the "
        "sentence, the test and each optimizer's standing with its figures and p-values.",
    )
    status: StudyStatusName | None = Field(None, description="The study's (for one study).")


class StudyDeletedOut(BaseModel):
    name: str
    optuna_studies: list[str] = Field(description="The Optuna studies removed with it.")
    remaining: list[str] = Field(
        default_factory=list,
        description="Optuna studies not removed yet (202): the service retries in the background.",
    )


class AskOut(BaseModel):
    study: str
    optimizer: str
    number: int = Field(description="With optimizer, names the trial in report and tell.")
    params: dict[str, Any] = Field(description="The hyperparameters to train with.")
    python: str = Field(description="The line of Python that builds this optimizer.")
    lease: str = Field(description="Send it back with report and tell.")
    lease_expires_at: datetime
    seed: int = Field(
        description="The training seed to use (weights' initialisation, batch order): the "
        "confirmation compares configs over the seeds the service chooses."
    )
    phase: Literal["search", "confirm"] = Field(
        description="'search', or 'confirm': a config re-trained on a fresh seed (never pruned; "
        "a diverged one is told failed and runs again)."
    )
    origin: str | None = Field(
        None,
        description="Where its config came from: portfolio, catalogue, sampler, retry or confirm.",
    )


class ReportOut(BaseModel):
    should_prune: bool = Field(description="Stop training and tell {'state': 'pruned'}.")
    lease_expires_at: datetime | None


class TellOut(BaseModel):
    study: str
    optimizer: str
    number: int
    state: Literal["complete", "pruned", "failed"]
    value: float | None
    study_status: str = Field(description="The study's status after this tell ('deleted' if gone).")
