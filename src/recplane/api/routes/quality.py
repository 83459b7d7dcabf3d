"""REST routes for data-quality checks and their stored reports."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from recplane.api.deps import Caller, RuntimeDep
from recplane.quality import QualityReport

router = APIRouter(prefix="/v1/datasets", tags=["quality"])


class CheckRequest(BaseModel):
    """Which version to check, and which to compare distributions against."""

    version: int | None = None
    reference_version: int | None = None


@router.post("/{name}/checks", response_model=QualityReport, status_code=201, summary="Run quality rules")
def run_check(name: str, request: CheckRequest, runtime: RuntimeDep, caller: Caller) -> QualityReport:
    return runtime.quality.check(
        name, principal=caller, version=request.version, reference_version=request.reference_version
    )


@router.get("/{name}/checks", response_model=list[QualityReport], summary="Stored reports, newest first")
def list_reports(name: str, runtime: RuntimeDep, caller: Caller, limit: int = 20) -> list[QualityReport]:
    return runtime.quality.reports(name, principal=caller, limit=limit)
