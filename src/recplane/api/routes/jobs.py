"""REST routes for the scheduler: jobs (submit, list, show, cancel, retry, explain, logs), queues and usage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from recplane.api.deps import Caller, RuntimeDep
from recplane.scheduler import Job, JobExplanation, JobSpec, QueueInfo, QueueSpec, UsageReport
from recplane.scheduler.records import JobStatus
from recplane.scheduler.spec import parse_duration

router = APIRouter(tags=["jobs"])

MAX_JOBS = 1000


@router.post("/v1/jobs", response_model=Job, status_code=201, summary="Submit a job to a queue")
def submit_job(spec: JobSpec, runtime: RuntimeDep, caller: Caller) -> Job:
    return runtime.scheduler.submit(spec, principal=caller)


@router.get("/v1/jobs", response_model=list[Job], summary="Jobs your team may see, newest first")
def list_jobs(
    runtime: RuntimeDep,
    caller: Caller,
    status: JobStatus | None = None,
    team: str | None = None,
    queue: str | None = None,
    kind: str | None = None,
    pipeline: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_JOBS)] = 100,
) -> list[Job]:
    return runtime.scheduler.list_jobs(
        principal=caller, status=status, team=team, queue=queue, kind=kind, pipeline=pipeline, limit=limit
    )


@router.get("/v1/jobs/{job_id}", response_model=Job, summary="One job with its status history")
def get_job(job_id: str, runtime: RuntimeDep, caller: Caller) -> Job:
    return runtime.scheduler.get(job_id, principal=caller)


@router.post("/v1/jobs/{job_id}/cancel", response_model=Job, summary="Cancel a job (running ones are stopped)")
def cancel_job(job_id: str, runtime: RuntimeDep, caller: Caller) -> Job:
    return runtime.scheduler.cancel(job_id, principal=caller)


@router.post("/v1/jobs/{job_id}/retry", response_model=Job, summary="Queue a failed or cancelled job again")
def retry_job(job_id: str, runtime: RuntimeDep, caller: Caller) -> Job:
    return runtime.scheduler.retry(job_id, principal=caller)


@router.get("/v1/jobs/{job_id}/explain", response_model=JobExplanation, summary="Why the job waits, in words")
def explain_job(job_id: str, runtime: RuntimeDep, caller: Caller) -> JobExplanation:
    return runtime.scheduler.explain(job_id, principal=caller)


@router.get(
    "/v1/jobs/{job_id}/logs",
    response_class=StreamingResponse,
    summary="The job's output (text); follow=true streams until the job has finished",
)
def job_logs(
    job_id: str,
    runtime: RuntimeDep,
    caller: Caller,
    follow: bool = False,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    runtime.scheduler.get(job_id, principal=caller)  # unknown or forbidden: an error now, not a broken stream
    chunks: Iterator[str] = runtime.scheduler.logs(job_id, principal=caller, follow=follow, offset=offset)
    return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")


@router.put("/v1/queues", response_model=list[QueueInfo], summary="Create or update queues (administrators)")
def apply_queues(specs: list[QueueSpec], runtime: RuntimeDep, caller: Caller) -> list[QueueInfo]:
    return runtime.scheduler.apply_queues(list(specs), principal=caller)


@router.get("/v1/queues", response_model=list[QueueInfo], summary="Queues, their quotas and what they hold now")
def list_queues(runtime: RuntimeDep, caller: Caller) -> list[QueueInfo]:
    return runtime.scheduler.list_queues()


@router.get("/v1/usage", response_model=UsageReport, summary="Compute used by jobs, grouped and priced")
def usage(
    runtime: RuntimeDep,
    caller: Caller,
    team: str | None = None,
    since: Annotated[str, Query(description="A window back from now: 7d, 24h, 30m ...")] = "7d",
    group_by: Annotated[str, Query(description="Comma-separated: team, queue, kind, pipeline, job.")] = "team",
) -> UsageReport:
    keys = [key.strip() for key in group_by.split(",") if key.strip()]
    return runtime.scheduler.usage(principal=caller, team=team, since=parse_duration(since), group_by=keys)
