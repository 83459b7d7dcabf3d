"""REST routes for pipelines: apply and list pipelines, start runs and backfills, runs with their DAG and steps."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from recplane.api.deps import Caller, RuntimeDep
from recplane.pipelines import PipelineInfo, PipelineRun, PipelineSpec
from recplane.pipelines.records import RunStatus

router = APIRouter(tags=["pipelines"])

MAX_RUNS = 1000


class RunRequest(BaseModel):
    """Params for a new run (over the pipeline's defaults)."""

    params: dict[str, Any] = Field(default_factory=dict)


class BackfillRequest(BaseModel):
    """A backfill: one run per day from ``start`` to ``end`` (inclusive), the day given as param ``param``."""

    start: date
    end: date
    param: str = "date"
    params: dict[str, Any] = Field(default_factory=dict)


@router.put("/v1/pipelines", response_model=PipelineInfo, summary="Create or update a pipeline (a new version "
            "when its spec changed)")
def apply_pipeline(spec: PipelineSpec, runtime: RuntimeDep, caller: Caller) -> PipelineInfo:
    return runtime.pipelines.apply(spec, principal=caller)


@router.get("/v1/pipelines", response_model=list[PipelineInfo], summary="Pipelines your team may see")
def list_pipelines(runtime: RuntimeDep, caller: Caller) -> list[PipelineInfo]:
    return runtime.pipelines.list(principal=caller)


@router.get("/v1/pipelines/{name}", response_model=PipelineInfo, summary="A pipeline: spec, DAG edges, schedule")
def get_pipeline(name: str, runtime: RuntimeDep, caller: Caller) -> PipelineInfo:
    return runtime.pipelines.get(name, principal=caller)


@router.post("/v1/pipelines/{name}/runs", response_model=PipelineRun, status_code=201, summary="Start a run")
def run_pipeline(name: str, request: RunRequest, runtime: RuntimeDep, caller: Caller) -> PipelineRun:
    return runtime.pipelines.run(name, params=request.params, principal=caller)


@router.post("/v1/pipelines/{name}/backfill", response_model=list[PipelineRun], status_code=201,
             summary="One run per day of a date range")
def backfill_pipeline(name: str, request: BackfillRequest, runtime: RuntimeDep, caller: Caller) -> list[PipelineRun]:
    return runtime.pipelines.backfill(name, request.start, request.end, param=request.param, params=request.params,
                                      principal=caller)


@router.get("/v1/pipeline-runs", response_model=list[PipelineRun], summary="Runs, newest first (without steps)")
def list_pipeline_runs(
    runtime: RuntimeDep,
    caller: Caller,
    pipeline: str | None = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RUNS)] = 50,
) -> list[PipelineRun]:
    return runtime.pipelines.list_runs(principal=caller, pipeline=pipeline, status=status, limit=limit)


@router.get("/v1/pipeline-runs/{run_id}", response_model=PipelineRun,
            summary="A run with every step: status, job, inputs, outputs, cache use and upstream steps (the DAG)")
def get_pipeline_run(run_id: str, runtime: RuntimeDep, caller: Caller) -> PipelineRun:
    return runtime.pipelines.get_run(run_id, principal=caller)


@router.post("/v1/pipeline-runs/{run_id}/cancel", response_model=PipelineRun, summary="Cancel a run")
def cancel_pipeline_run(run_id: str, runtime: RuntimeDep, caller: Caller) -> PipelineRun:
    return runtime.pipelines.cancel_run(run_id, principal=caller)
