"""What the pipeline service answers with: pipelines, runs and step runs (one schema for SDK, REST and CLI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "DONE_STEP_STATUSES",
    "PipelineInfo",
    "PipelineRun",
    "RunStatus",
    "StepRun",
    "StepStatus",
]

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
StepStatus = Literal["pending", "queued", "running", "succeeded", "cached", "failed", "skipped", "cancelled"]
ACTIVE_RUN_STATUSES: tuple[str, ...] = ("queued", "running")
DONE_STEP_STATUSES: frozenset[str] = frozenset({"succeeded", "cached"})
FINISHED_STEP_STATUSES: frozenset[str] = frozenset({"succeeded", "cached", "failed", "skipped", "cancelled"})


class PipelineInfo(BaseModel):
    """A pipeline's current version: its spec, schedule, triggers and the DAG's edges."""

    name: str
    version: int
    team: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: str | None = None
    next_run_at: datetime | None = Field(None, description="The next scheduled start (cron pipelines).")
    triggers: list[dict[str, Any]] = Field(default_factory=list)
    steps: list[str] = Field(description="Step names in dependency order.")
    edges: list[tuple[str, str]] = Field(default_factory=list, description="(upstream, downstream) pairs.")
    spec: dict[str, Any]
    created_by: str = ""
    created_at: datetime


class StepRun(BaseModel):
    """One step of a run: status, its job, what it waited for, resolved inputs, outputs, cache use."""

    step: str
    status: StepStatus
    needs: list[str] = Field(default_factory=list, description="Upstream steps (the DAG's incoming edges).")
    job_id: str | None = None
    inline: bool = False
    cache_key: str | None = None
    cached_from: str | None = Field(None, description="The run whose outputs a cache hit reused.")
    inputs: Any = None
    outputs: Any = None
    attempts: int = 0
    error: str | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class PipelineRun(BaseModel):
    """A run of a pipeline version: params, why it started, status, and (when asked for) its steps."""

    id: str
    pipeline: str
    pipeline_version: int
    team: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: RunStatus
    trigger: str = Field(description="manual, schedule, dataset or backfill.")
    trigger_detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    created_by: str = ""
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: list[StepRun] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        """True once the run succeeded, failed or was cancelled."""
        return self.status not in ACTIVE_RUN_STATUSES

    def step(self, name: str) -> StepRun:
        """The step run called ``name``."""
        for item in self.steps:
            if item.step == name:
                return item
        raise KeyError(name)
