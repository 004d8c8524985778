"""Ask/tell for studies of task ``external``: the client's own code trains the trials."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from service.api.deps import AskTellDep, RequireApiKey, SettingsDep
from service.api.errors import error_responses
from service.api.schemas import (
    INT32_MAX,
    AskOut,
    AskRequest,
    ImportedTrialOut,
    ImportOut,
    ImportRequest,
    RenewOut,
    RenewRequest,
    ReportOut,
    ReportRequest,
    TellOut,
    TellRequest,
)
from service.trials.ask_tell import ask_trial, renew, report_value, tell_outcome
from service.trials.imports import TrialToImport, import_trials

router = APIRouter(
    prefix="/api/v1/studies/{name}/trials", tags=["ask/tell"], dependencies=[RequireApiKey]
)
_ERRORS = error_responses(400, 401, 404, 409, 422)
TrialNumber = Annotated[int, Path(ge=0, le=INT32_MAX, description="The number ask returned.")]


@router.post("/ask", response_model=AskOut, summary="Ask for a trial to train", responses=_ERRORS)
def ask(
    name: str,
    at: AskTellDep,
    settings: SettingsDep,
    body: Annotated[AskRequest | None, Body()] = None,
) -> AskOut:
    """The next trial's hyperparameters and a lease. 409 when the study takes no more trials
    or every slot is held by a running trial (retry when one ends). A lease that runs out
    without a tell fails the trial; its hyperparameters go to the next ask."""
    lease_seconds = body.lease_seconds if body and body.lease_seconds else settings.lease_seconds
    return ask_trial(at, name, lease_seconds=lease_seconds)


@router.post(
    "/{optimizer}/{number}/report",
    response_model=ReportOut,
    summary="Report an intermediate value",
    responses=_ERRORS,
)
def report(
    name: str, optimizer: str, number: TrialNumber, body: ReportRequest, at: AskTellDep
) -> ReportOut:
    """Record the value at a step; the answer says whether to prune. Renews the lease."""
    return report_value(
        at, name, optimizer, number, step=body.step, value=body.value, lease=body.lease
    )


@router.post(
    "/{optimizer}/{number}/renew",
    response_model=RenewOut,
    summary="Renew a trial's lease",
    responses=_ERRORS,
)
def renew_lease(
    name: str, optimizer: str, number: TrialNumber, body: RenewRequest, at: AskTellDep
) -> RenewOut:
    """Keep the trial while training takes longer than its lease (a report renews it too)."""
    return renew(at, name, optimizer, number, lease=body.lease, lease_seconds=body.lease_seconds)


@router.post(
    "/{optimizer}/{number}/tell",
    response_model=TellOut,
    summary="Tell how a trial ended",
    responses=_ERRORS,
)
def tell(
    name: str, optimizer: str, number: TrialNumber, body: TellRequest, at: AskTellDep
) -> TellOut:
    """``{"value": v}`` for a complete trial, ``{"state": "pruned"}`` or ``{"state": "failed"}``,
    with the lease. A failed trial's slot goes back, so the study still gets its ``n_trials``.
    A retried identical tell answers as the first; a different one is a 409."""
    return tell_outcome(
        at, name, optimizer, number, state=body.outcome, value=body.value, lease=body.lease
    )


@router.post(
    "/import",
    response_model=ImportOut,
    summary="Import trials trained elsewhere",
    responses=_ERRORS,
)
def import_(name: str, body: ImportRequest, at: AskTellDep) -> ImportOut:
    """Bring finished trials (trained before the study existed, or by another tool) into an
    external study, in order: each takes a trial slot and counts like a told trial (origin
    ``import``), so the study's best, the catalogue and later warm starts see it. Everything is
    checked before anything is written: hyperparameters must lie inside the study's search
    space exactly (422 otherwise), and the study needs a free slot per trial (409). Each trial is
    imported whole or not at all; a request that fails part way says how many were imported."""
    imported = import_trials(
        at,
        name,
        [
            TrialToImport(
                optimizer=trial.optimizer,
                params=trial.params,
                state=trial.state,
                value=trial.value,
                intermediate_values=trial.intermediate_values,
            )
            for trial in body.trials
        ],
    )
    return ImportOut(
        study=name,
        imported=[ImportedTrialOut(optimizer=t.optimizer, number=t.number) for t in imported],
    )
