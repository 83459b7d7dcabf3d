"""What the scheduler answers with: jobs and their history, queues with their use, explanations, usage reports.

Pydantic models, so the SDK, the REST API and the CLI's ``--json`` share one schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from recplane.scheduler.spec import QueueSpec, ResourceSpec

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "Job",
    "JobEvent",
    "JobExplanation",
    "JobStatus",
    "QueueInfo",
    "UsageReport",
    "UsageRow",
]

JobStatus = Literal["queued", "admitted", "running", "succeeded", "failed", "cancelled", "preempted"]
FINISHED_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_STATUSES: frozenset[str] = frozenset({"queued", "admitted", "running"})
UsageGroup = Literal["team", "queue", "kind", "pipeline", "job"]


class JobEvent(BaseModel):
    """One status change: from (null at submission) → to, why, when."""

    from_status: str | None
    to_status: str
    reason: str
    at: datetime


class Job(BaseModel):
    """A job as stored: its spec, where it stands, its attempts and its history (``events``, oldest first)."""

    id: str
    name: str
    kind: str
    team: str
    queue: str
    priority: int
    status: JobStatus
    resources: ResourceSpec
    workers: int
    attempts: int
    max_retries: int
    backoff_seconds: float
    timeout_seconds: float | None
    entrypoint: str | None
    command: list[str] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    pipeline: str | None = None
    created_by: str = ""
    created_at: datetime
    admitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    not_before: datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    checkpoint: str | None = None
    result: dict[str, Any] | None = None
    backend: str | None = None
    pid: int | None = None
    borrowed: bool = False
    preempted_count: int = 0
    stop_requested: str | None = None
    events: list[JobEvent] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        """True once the job succeeded, failed for good or was cancelled."""
        return self.status in FINISHED_STATUSES


class JobExplanation(BaseModel):
    """Why a job is where it is, in words: for a pending job the hold reason and the jobs ahead of it."""

    job_id: str
    status: JobStatus
    code: str | None = Field(None, description="Stable reason code of a hold (quota, capacity, reclaiming ...).")
    message: str
    ahead: list[str] = Field(default_factory=list, description="Pending jobs of its queue that come first.")


class QueueInfo(QueueSpec):
    """A queue's spec and what it holds now: resources in use, jobs running and waiting."""

    used: ResourceSpec = Field(default_factory=lambda: ResourceSpec(cpu=0, memory_gb=0, gpu=0))
    running: int = 0
    pending: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


class UsageRow(BaseModel):
    """Usage of one group (team, queue, kind, pipeline or job) over the report's window, and what it cost."""

    group: dict[str, str | None]
    jobs: int
    attempts: int
    cpu_hours: float
    gpu_hours: float
    memory_gb_hours: float
    wall_hours: float
    cost: float


class UsageReport(BaseModel):
    """Usage from the ledger since ``since``, grouped by ``group_by``, priced at ``prices`` (per hour)."""

    since: datetime
    until: datetime
    group_by: list[UsageGroup]
    prices: dict[str, float]
    currency: str
    rows: list[UsageRow]
    total: UsageRow
