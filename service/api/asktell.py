"""Ask/tell for studies of task ``external``: the client's own code trains the trials."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import EngineDep, RequireApiKey, SettingsDep, StorageDep
from service.api.errors import error_responses
from service.ask_tell import (
    AskedTrial,
    Reported,
    Told,
    ask_trial,
    renew_lease,
    report_value,
    tell_outcome,
)
from service.schemas import (
    MAX_LEASE_SECONDS,
    AskOut,
    AskRequest,
    ReportOut,
    ReportRequest,
    TellOut,
    TellRequest,
)

router = APIRouter(
    prefix="/api/v1/studies/{name}/trials", tags=["ask/tell"], dependencies=[RequireApiKey]
)
_ERRORS = error_responses(400, 401, 404, 409, 422)


@router.post(
    "/ask",
    response_model=AskOut,
    summary="Ask for a trial to train",
    responses=_ERRORS,
)
def ask(
    name: str,
    engine: EngineDep,
    storage: StorageDep,
    settings: SettingsDep,
    body: Annotated[AskRequest | None, Body()] = None,
) -> AskedTrial:
    """The next trial's hyperparameters and a lease. 409 when the study takes no more trials
    or every slot is held by a running trial (retry when one ends). A lease that runs out
    without a tell fails the trial; its hyperparameters go to the next ask."""
    lease_seconds = body.lease_seconds if body and body.lease_seconds else settings.lease_seconds
    return ask_trial(engine=engine, storage=storage, name=name, lease_seconds=lease_seconds)


@router.post(
    "/{optimizer}/{number}/report",
    response_model=ReportOut,
    summary="Report an intermediate value",
    responses=_ERRORS,
)
def report(
    name: str,
    optimizer: str,
    number: int,
    body: ReportRequest,
    engine: EngineDep,
    storage: StorageDep,
) -> Reported:
    """Record the value at a step; the answer says whether to prune. Renews the lease."""
    return report_value(
        engine=engine,
        storage=storage,
        name=name,
        optimizer=optimizer,
        number=number,
        step=body.step,
        value=body.value,
        lease=body.lease,
    )


@router.post(
    "/{optimizer}/{number}/tell",
    response_model=TellOut,
    summary="Tell how a trial ended",
    responses=_ERRORS,
)
def tell(
    name: str,
    optimizer: str,
    number: int,
    body: TellRequest,
    engine: EngineDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Told:
    """``{"value": v}`` for a complete trial, ``{"state": "pruned"}`` or ``{"state": "failed"}``.
    A failed trial's slot goes back, so the study still gets its ``n_trials``."""
    return tell_outcome(
        engine=engine,
        storage=storage,
        name=name,
        optimizer=optimizer,
        number=number,
        value=body.value,
        state=body.outcome,
        lease=body.lease,
        max_failed_trials=settings.max_failed_trials,
    )


class RenewRequest(BaseModel):
    """Extend the lease of a running trial."""

    model_config = ConfigDict(extra="forbid")

    lease: str = Field(max_length=64, description="The lease of the ask.")
    lease_seconds: float | None = Field(
        None,
        gt=0,
        le=MAX_LEASE_SECONDS,
        description="The new lease from now; default: the one the trial was asked with.",
    )


class RenewOut(BaseModel):
    lease_expires_at: datetime


@router.post(
    "/{optimizer}/{number}/renew",
    response_model=RenewOut,
    summary="Extend a trial's lease while it trains",
    responses=_ERRORS,
)
def renew(
    name: str,
    optimizer: str,
    number: int,
    body: RenewRequest,
    engine: EngineDep,
    storage: StorageDep,
) -> RenewOut:
    """Keep a trial that trains longer than its lease: the lease runs ``lease_seconds`` from now.
    409 when the trial has ended, its lease ran out, or the lease does not match."""
    expires = renew_lease(
        engine=engine,
        storage=storage,
        name=name,
        optimizer=optimizer,
        number=number,
        lease=body.lease,
        lease_seconds=body.lease_seconds,
    )
    return RenewOut(lease_expires_at=expires)
