"""Liveness, readiness, identity and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from recplane import __version__
from recplane.api.deps import Caller, RuntimeDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Liveness/readiness answer."""

    status: str
    version: str = __version__


class WhoAmI(BaseModel):
    """The team a token belongs to (null for the administrator in dev mode)."""

    team: str | None
    admin: bool


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Readiness: the catalog answers")
async def readyz(runtime: RuntimeDep) -> Health:
    await run_in_threadpool(runtime.catalog.ping)
    return Health(status="ready")


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return request.app.state.metrics.render()


@router.get("/v1/whoami", response_model=WhoAmI, summary="Which team this token acts for")
def whoami(caller: Caller) -> WhoAmI:
    return WhoAmI(team=caller.team, admin=caller.is_admin)
