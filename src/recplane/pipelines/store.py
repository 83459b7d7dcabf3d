"""The pipelines' catalog persistence: pipeline versions, runs, step runs and the step cache.

Status changes are conditional updates (``... WHERE status IN (expected)``), so a runner that lost its leadership
mid-pass, an API call cancelling a run and a restarted control plane cannot push a step down two paths.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from recplane.catalog import Catalog
from recplane.catalog.tables import (
    JobRecord,
    PipelineRecord,
    PipelineRunRecord,
    StepCacheRecord,
    StepRunRecord,
    utcnow,
)
from recplane.errors import NotFound
from recplane.pipelines.records import ACTIVE_RUN_STATUSES, PipelineRun, StepRun

__all__ = ["JobState", "PipelineStore", "aware", "new_run_id", "run_of"]


def new_run_id() -> str:
    """A fresh run id: 12 hex digits."""
    return uuid.uuid4().hex[:12]


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC): make them aware again."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class JobState:
    """What the runner needs to know of a step's job."""

    id: str
    status: str
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    exit_code: int | None
    backend: str | None
    segment: bool = False


def step_of(record: StepRunRecord, needs: Sequence[str] = (), inline: bool = False) -> StepRun:
    """The API form of a stored step run."""
    return StepRun(
        step=record.step, status=record.status, needs=list(needs), job_id=record.job_id, inline=inline,
        cache_key=record.cache_key, cached_from=record.cached_from, inputs=record.inputs, outputs=record.outputs,
        attempts=record.attempts, error=record.error, submitted_at=aware(record.submitted_at),
        started_at=aware(record.started_at), finished_at=aware(record.finished_at),
    )


def run_of(record: PipelineRunRecord, steps: Sequence[StepRun] = ()) -> PipelineRun:
    """The API form of a stored run."""
    return PipelineRun(
        id=record.id, pipeline=record.pipeline, pipeline_version=record.pipeline_version, team=record.team,
        params=record.params, status=record.status, trigger=record.trigger, trigger_detail=record.trigger_detail,
        error=record.error, created_by=record.created_by, created_at=aware(record.created_at) or utcnow(),
        started_at=aware(record.started_at), finished_at=aware(record.finished_at), steps=list(steps),
    )


class PipelineStore:
    """Pipelines, runs, step runs and the step cache in the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def latest(self, name: str) -> PipelineRecord | None:
        """The newest version of a pipeline, or None."""
        query = select(PipelineRecord).where(PipelineRecord.name == name).order_by(PipelineRecord.version.desc())
        with self.catalog.session() as session:
            return session.scalars(query.limit(1)).first()

    def version(self, name: str, version: int) -> PipelineRecord:
        """One version of a pipeline; NotFound names it."""
        query = select(PipelineRecord).where(PipelineRecord.name == name, PipelineRecord.version == version)
        with self.catalog.session() as session:
            record = session.scalars(query).first()
        if record is None:
            raise NotFound(f"Pipeline {name!r} has no version {version}.")
        return record

    def add_version(self, record: PipelineRecord) -> PipelineRecord | None:
        """Store a new version (None when a concurrent apply took its number first)."""
        try:
            with self.catalog.session() as session:
                session.add(record)
                session.flush()
                return record
        except IntegrityError:
            return None

    def list_latest(self, teams: Iterable[str] | None = None) -> list[PipelineRecord]:
        """The newest version of every pipeline, by name."""
        with self.catalog.session() as session:
            rows = list(session.scalars(select(PipelineRecord).order_by(PipelineRecord.name,
                                                                        PipelineRecord.version.desc())))
        latest: dict[str, PipelineRecord] = {}
        for row in rows:
            latest.setdefault(row.name, row)
        allowed = None if teams is None else set(teams)
        return [row for row in latest.values() if allowed is None or row.team in allowed]

    def create_run(self, run: PipelineRunRecord, steps: Sequence[str]) -> PipelineRunRecord | None:
        """Store a run and its pending steps in one transaction (None when its dedup key exists already)."""
        try:
            with self.catalog.session() as session:
                session.add(run)
                session.flush()
                session.add_all(StepRunRecord(run_id=run.id, step=name, position=index, status="pending", attempts=0)
                                for index, name in enumerate(steps))
                return run
        except IntegrityError:
            return None

    def run(self, run_id: str) -> PipelineRunRecord:
        """One run; NotFound names the id."""
        with self.catalog.session() as session:
            record = session.get(PipelineRunRecord, run_id)
        if record is None:
            raise NotFound(f"No pipeline run {run_id!r}; `recplane pipelines list` shows recent runs.")
        return record

    def steps(self, run_id: str) -> list[StepRunRecord]:
        """A run's step runs, in spec order."""
        query = select(StepRunRecord).where(StepRunRecord.run_id == run_id).order_by(StepRunRecord.position)
        with self.catalog.session() as session:
            return list(session.scalars(query))

    def find_runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        teams: Iterable[str] | None = None,
        trigger: str | None = None,
        limit: int = 50,
    ) -> list[PipelineRunRecord]:
        """Runs, newest first, filtered."""
        query = select(PipelineRunRecord).order_by(PipelineRunRecord.created_at.desc(), PipelineRunRecord.id.desc())
        for column, value in ((PipelineRunRecord.pipeline, pipeline), (PipelineRunRecord.status, status),
                              (PipelineRunRecord.trigger, trigger)):
            if value is not None:
                query = query.where(column == value)
        if teams is not None:
            query = query.where(PipelineRunRecord.team.in_(list(teams)))
        with self.catalog.session() as session:
            return list(session.scalars(query.limit(limit)))

    def active_runs(self) -> list[PipelineRunRecord]:
        """Runs still queued or running, oldest first."""
        query = (select(PipelineRunRecord).where(PipelineRunRecord.status.in_(ACTIVE_RUN_STATUSES))
                 .order_by(PipelineRunRecord.created_at))
        with self.catalog.session() as session:
            return list(session.scalars(query))

    def update_run(self, run_id: str, expected: Sequence[str], **fields: Any) -> bool:
        """Set fields of a run that is in one of ``expected``; True when it was."""
        with self.catalog.session() as session:
            result = session.execute(
                update(PipelineRunRecord).where(PipelineRunRecord.id == run_id,
                                                PipelineRunRecord.status.in_(list(expected)))
                .values(**fields).execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def update_step(self, run_id: str, step: str, expected: Sequence[str], *, cache: StepCacheRecord | None = None,
                    **fields: Any) -> bool:
        """Set fields of a step run in one of ``expected`` (and store a cache entry in the same transaction)."""
        # Core statements, not ORM ones: this runs once per step on the hot path of inline segments.
        table, cache_table = cast(Table, StepRunRecord.__table__), cast(Table, StepCacheRecord.__table__)
        with self.catalog.engine.begin() as connection:
            result = connection.execute(
                update(table).where(table.c.run_id == run_id, table.c.step == step,
                                    table.c.status.in_(list(expected))).values(**fields)
            )
            changed = bool(result.rowcount)
            if changed and cache is not None:
                known = connection.execute(select(cache_table.c.cache_key)
                                           .where(cache_table.c.cache_key == cache.cache_key)).first()
                if known is None:
                    connection.execute(insert(cache_table).values(
                        cache_key=cache.cache_key, pipeline=cache.pipeline, step=cache.step, outputs=cache.outputs,
                        run_id=cache.run_id, created_at=cache.created_at or utcnow()))
            return changed

    def cached(self, cache_key: str) -> StepCacheRecord | None:
        """The cache entry for ``cache_key``, or None."""
        with self.catalog.session() as session:
            return session.get(StepCacheRecord, cache_key)

    def jobs(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """Where the given jobs stand (one query)."""
        if not job_ids:
            return {}
        query = select(JobRecord.id, JobRecord.status, JobRecord.result, JobRecord.error, JobRecord.attempts,
                       JobRecord.exit_code, JobRecord.backend, JobRecord.spec).where(JobRecord.id.in_(list(job_ids)))
        with self.catalog.session() as session:
            return {row.id: JobState(row.id, row.status, row.result, row.error, row.attempts, row.exit_code,
                                     row.backend, "segment" in ((row.spec or {}).get("args") or {}))
                    for row in session.execute(query)}

    def update_steps(self, run_id: str, steps: Sequence[str], expected: Sequence[str], **fields: Any) -> int:
        """Set fields of several step runs in one statement; returns how many were in an expected status."""
        with self.catalog.session() as session:
            result = session.execute(
                update(StepRunRecord).where(StepRunRecord.run_id == run_id, StepRunRecord.step.in_(list(steps)),
                                            StepRunRecord.status.in_(list(expected)))
                .values(**fields).execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def job_of_step(self, pipeline: str, run_id: str, step: str, since: datetime) -> str | None:
        """The job submitted for a step whose id was never recorded (the control plane died in between): one of
        the run's jobs for that step that no step run names and that did not fail or get cancelled."""
        known = select(StepRunRecord.job_id).where(StepRunRecord.run_id == run_id, StepRunRecord.job_id.is_not(None))
        query = select(JobRecord.id, JobRecord.spec).where(
            JobRecord.kind == "pipeline_step", JobRecord.pipeline == pipeline, JobRecord.created_at >= since,
            JobRecord.status.not_in(["failed", "cancelled"]), JobRecord.id.not_in(known),
        )
        with self.catalog.session() as session:
            for row in session.execute(query):
                args = (row.spec or {}).get("args") or {}
                if args.get("run_id") == run_id and (args.get("step") == step or step in args.get("segment", ())):
                    return str(row.id)
        return None
