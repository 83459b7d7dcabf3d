"""REST routes for training runs: list them, show one with its epochs, compare several side by side."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from recplane.api.deps import Caller, RuntimeDep
from recplane.training.runs import MAX_LIST, RunComparison, RunRecord, RunStatus

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.get("", response_model=list[RunRecord], summary="Training runs your team may see, newest first")
def list_runs(
    runtime: RuntimeDep,
    caller: Caller,
    model: str | None = None,
    dataset: str | None = None,
    status: RunStatus | None = None,
    group: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
) -> list[RunRecord]:
    return runtime.runs.list(principal=caller, model=model, dataset=dataset, status=status, group=group, limit=limit)


@router.get("/compare", response_model=RunComparison, summary="Runs side by side: differing settings, metrics")
def compare_runs(
    runtime: RuntimeDep,
    caller: Caller,
    ids: Annotated[str, Query(description="Comma-separated run ids (two or more).")],
) -> RunComparison:
    return runtime.runs.compare([part.strip() for part in ids.split(",") if part.strip()], principal=caller)


@router.get("/{run_id}", response_model=RunRecord, summary="One training run with its epochs")
def get_run(run_id: str, runtime: RuntimeDep, caller: Caller) -> RunRecord:
    return runtime.runs.get(run_id, principal=caller)
