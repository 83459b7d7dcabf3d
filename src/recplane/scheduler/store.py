"""The scheduler's catalog persistence: jobs and their status events, queues, and the usage ledger.

Status changes are conditional updates (``... WHERE status IN (expected)``) written with their event in one
transaction, so the scheduler loop, an API call cancelling a job and a second server can race without a job
ever taking two paths: the loser's update matches no row and it moves on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.engine import Connection

from recplane.catalog import Catalog
from recplane.catalog.tables import Base, JobEventRecord, JobRecord, JobUsageRecord, QueueRecord, utcnow
from recplane.errors import NotFound
from recplane.scheduler.records import ACTIVE_STATUSES, Job, JobEvent, QueueInfo
from recplane.scheduler.spec import BudgetSpec, JobSpec, QueueSpec, QuotaSpec, ResourceLimit, ResourceSpec

__all__ = ["JobStore", "QueuedJob", "Transition", "UsageEntry", "new_job_id"]

_JOBS = Table("jobs", Base.metadata)  # the ORM tables' Core face, for batched statements
_EVENTS = Table("job_events", Base.metadata)
_USAGE = Table("job_usage", Base.metadata)


def new_job_id() -> str:
    """A fresh job id: 12 hex digits."""
    return uuid.uuid4().hex[:12]


class QueuedJob(NamedTuple):
    """What admission reads of a queued job."""

    id: str
    queue: str
    priority: int
    cpu: float
    memory_gb: float
    gpu: float
    workers: int
    created_at: datetime
    not_before: datetime | None


@dataclass(frozen=True)
class Transition:
    """Move ``job_id`` from one of ``expected`` to ``to`` (with ``fields`` set), recording ``reason``."""

    job_id: str
    expected: tuple[str, ...]
    to: str
    reason: str
    fields: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class UsageEntry:
    """One ledger row: what an attempt consumed."""

    job_id: str
    attempt: int
    team: str
    queue: str
    kind: str
    pipeline: str | None
    outcome: str
    cpu_seconds: float
    gpu_seconds: float
    memory_gb_seconds: float
    wall_seconds: float
    peak_memory_gb: float


def job_of(record: JobRecord, events: Sequence[JobEventRecord] = ()) -> Job:
    """The API form of a stored job."""
    spec = record.spec or {}
    return Job(
        id=record.id,
        name=record.name,
        kind=record.kind,
        team=record.team,
        queue=record.queue,
        priority=record.priority,
        status=record.status,
        resources=ResourceSpec(cpu=record.cpu, memory_gb=record.memory_gb, gpu=record.gpu),
        workers=record.workers,
        attempts=record.attempts,
        max_retries=record.max_retries,
        backoff_seconds=record.backoff_seconds,
        timeout_seconds=record.timeout_seconds,
        entrypoint=record.entrypoint,
        command=spec.get("command"),
        args=spec.get("args") or {},
        env=record.env or {},
        pipeline=record.pipeline,
        created_by=record.created_by,
        created_at=record.created_at,
        admitted_at=record.admitted_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        not_before=record.not_before,
        exit_code=record.exit_code,
        error=record.error,
        checkpoint=record.checkpoint,
        result=record.result,
        backend=record.backend,
        pid=record.pid,
        borrowed=record.borrowed,
        preempted_count=record.preempted_count,
        stop_requested=record.stop_requested,
        events=[
            JobEvent(from_status=e.from_status, to_status=e.to_status, reason=e.reason, at=e.at) for e in events
        ],
    )


def queue_spec_of(record: QueueRecord) -> QueueSpec:
    """The spec a queue record was applied from."""
    limits = (record.borrowing_limit_cpu, record.borrowing_limit_memory_gb, record.borrowing_limit_gpu)
    return QueueSpec(
        name=record.name,
        team=record.team,
        cohort=record.cohort,
        nominal=QuotaSpec(cpu=record.nominal_cpu, memory_gb=record.nominal_memory_gb, gpu=record.nominal_gpu),
        # A limit on no resource at all is no limit: both read back as None.
        borrowing_limit=None
        if all(v is None for v in limits)
        else ResourceLimit(cpu=limits[0], memory_gb=limits[1], gpu=limits[2]),
        backend=record.backend,
        strict_fifo=record.strict_fifo,
        budget=None if record.budget is None else BudgetSpec.model_validate(record.budget),
    )


class JobStore:
    """Jobs, events, queues and usage in the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(self, job_id: str, spec: JobSpec, *, created_by: str, reason: str) -> Job:
        """Store a new queued job and its first event."""
        now = utcnow()
        record = JobRecord(
            id=job_id,
            name=spec.display_name,
            kind=spec.kind,
            team=spec.team,
            queue=spec.queue,
            priority=spec.priority,
            spec=spec.model_dump(mode="json"),
            cpu=spec.resources.cpu,
            memory_gb=spec.resources.memory_gb,
            gpu=spec.resources.gpu,
            workers=spec.workers,
            status="queued",
            attempts=0,
            max_retries=spec.max_retries,
            backoff_seconds=spec.backoff_seconds,
            timeout_seconds=spec.timeout_seconds,
            entrypoint=spec.entrypoint,
            env=dict(spec.env),
            pipeline=spec.pipeline,
            created_by=created_by,
            created_at=now,
            borrowed=False,
            preempted_count=0,
        )
        event = JobEventRecord(job_id=job_id, from_status=None, to_status="queued", reason=reason, at=now)
        with self.catalog.session() as session:
            session.add(record)
            session.flush()
            session.add(event)
        return job_of(record, [event])

    def get(self, job_id: str) -> Job:
        """One job with its events; NotFound names the id."""
        with self.catalog.session() as session:
            record = session.get(JobRecord, job_id)
            if record is None:
                raise NotFound(f"No job {job_id!r}; `recplane jobs list` shows the jobs you may see.")
            events = session.scalars(
                select(JobEventRecord).where(JobEventRecord.job_id == job_id).order_by(JobEventRecord.id)
            ).all()
            return job_of(record, events)

    def record(self, job_id: str) -> JobRecord:
        """The raw record (detached), for the scheduler's own use."""
        with self.catalog.session() as session:
            record = session.get(JobRecord, job_id)
            if record is None:
                raise NotFound(f"No job {job_id!r}.")
            return record

    def records(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """Several raw records at once (detached), in no particular order."""
        with self.catalog.session() as session:
            return list(session.scalars(select(JobRecord).where(JobRecord.id.in_(list(job_ids)))).all())

    def find(
        self,
        *,
        teams: Iterable[str] | None = None,
        status: str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        pipeline: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs, newest first, filtered (``teams=None``: every team)."""
        query = select(JobRecord).order_by(JobRecord.created_at.desc(), JobRecord.id.desc()).limit(limit)
        if teams is not None:
            query = query.where(JobRecord.team.in_(list(teams)))
        for column, value in ((JobRecord.status, status), (JobRecord.queue, queue), (JobRecord.kind, kind),
                              (JobRecord.pipeline, pipeline)):
            if value is not None:
                query = query.where(column == value)
        with self.catalog.session() as session:
            return [job_of(record) for record in session.scalars(query).all()]

    def active(self) -> list[JobRecord]:
        """Every queued, admitted or running job (detached records)."""
        with self.catalog.session() as session:
            query = select(JobRecord).where(JobRecord.status.in_(sorted(ACTIVE_STATUSES)))
            return list(session.scalars(query).all())

    def holding(self) -> list[JobRecord]:
        """Every admitted or running job (detached records): the ones holding resources."""
        with self.catalog.session() as session:
            query = select(JobRecord).where(JobRecord.status.in_(["admitted", "running"]))
            return list(session.scalars(query).all())

    def queued(self) -> list[QueuedJob]:
        """Every queued job, as the few columns admission reads (no ORM objects: there may be many thousands)."""
        query = select(*(_JOBS.c[name] for name in QueuedJob._fields)).where(_JOBS.c.status == "queued")
        with self.catalog.engine.connect() as connection:
            return [QueuedJob(*row) for row in connection.execute(query)]

    def apply(self, transitions: Sequence[Transition], *, usage: Sequence[UsageEntry] = ()) -> list[str]:
        """Apply status changes (and append ``usage`` ledger rows) in one transaction; returns the ids whose job was
        in an expected status. Written with SQLAlchemy Core: a round applies hundreds of these at once."""
        done: list[str] = []
        if not transitions and not usage:
            return done
        now = utcnow()
        events: list[dict[str, Any]] = []
        with self.catalog.engine.begin() as connection:
            for change in transitions:
                previous = self._apply_one(connection, change)
                if previous is None:
                    continue
                done.append(change.job_id)
                if previous != change.to:
                    events.append({"job_id": change.job_id, "from_status": previous, "to_status": change.to,
                                   "reason": change.reason, "at": now})
            if events:
                connection.execute(insert(_EVENTS), events)
            if usage:
                connection.execute(insert(_USAGE), [{**entry.__dict__, "at": now} for entry in usage])
        return done

    @staticmethod
    def _apply_one(connection: Connection, change: Transition) -> str | None:
        """The status the job moved from, or None when it was in none of the expected ones."""
        if len(change.expected) == 1:
            previous: str | None = change.expected[0]
        else:
            previous = connection.execute(
                select(_JOBS.c.status).where(_JOBS.c.id == change.job_id, _JOBS.c.status.in_(change.expected))
            ).scalar()
            if previous is None:
                return None
        values = {"status": change.to, **(change.fields or {})}
        result = connection.execute(
            update(_JOBS).where(_JOBS.c.id == change.job_id, _JOBS.c.status == previous).values(**values)
        )
        return previous if result.rowcount == 1 else None

    def set_fields(self, job_id: str, **fields: Any) -> None:
        """Set columns of a job without a status change (pid, checkpoint, result, stop request)."""
        with self.catalog.session() as session:
            session.execute(
                update(JobRecord).where(JobRecord.id == job_id).values(**fields)
                .execution_options(synchronize_session=False)
            )

    def note(self, job_id: str, status: str, reason: str) -> None:
        """Record an event that changes no status (a stop request, a timeout) in the job's history."""
        with self.catalog.session() as session:
            session.add(JobEventRecord(job_id=job_id, from_status=status, to_status=status, reason=reason,
                                       at=utcnow()))

    def request_stop(self, job_id: str, why: str, *, statuses: Sequence[str]) -> bool:
        """Mark a job to be stopped (``why``: preempt, cancel, timeout) if it is in ``statuses``; cancel wins."""
        with self.catalog.session() as session:
            query = update(JobRecord).where(JobRecord.id == job_id, JobRecord.status.in_(list(statuses)))
            if why != "cancel":
                query = query.where(JobRecord.stop_requested.is_(None))
            result = session.execute(query.values(stop_requested=why).execution_options(synchronize_session=False))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def usage_since(self, since: datetime, *, teams: Iterable[str] | None = None) -> list[JobUsageRecord]:
        """Ledger rows written since ``since`` (optionally of some teams only)."""
        query = select(JobUsageRecord).where(JobUsageRecord.at >= since).order_by(JobUsageRecord.id)
        if teams is not None:
            query = query.where(JobUsageRecord.team.in_(list(teams)))
        with self.catalog.session() as session:
            return list(session.scalars(query).all())

    def queue_usage_since(self, queue: str, since: datetime) -> dict[str, float]:
        """CPU, GPU and memory seconds a queue's attempts consumed since ``since`` (the budget check)."""
        query = select(
            func.coalesce(func.sum(JobUsageRecord.cpu_seconds), 0.0),
            func.coalesce(func.sum(JobUsageRecord.gpu_seconds), 0.0),
            func.coalesce(func.sum(JobUsageRecord.memory_gb_seconds), 0.0),
        ).where(JobUsageRecord.queue == queue, JobUsageRecord.at >= since)
        with self.catalog.session() as session:
            cpu, gpu, memory = session.execute(query).one()
        return {"cpu_seconds": float(cpu), "gpu_seconds": float(gpu), "memory_gb_seconds": float(memory)}

    def apply_queue(self, spec: QueueSpec) -> QueueRecord:
        """Create or replace a queue."""
        limit = spec.borrowing_limit
        values = {
            "team": spec.team,
            "cohort": spec.cohort,
            "nominal_cpu": spec.nominal.cpu,
            "nominal_memory_gb": spec.nominal.memory_gb,
            "nominal_gpu": spec.nominal.gpu,
            "borrowing_limit_cpu": None if limit is None else limit.cpu,
            "borrowing_limit_memory_gb": None if limit is None else limit.memory_gb,
            "borrowing_limit_gpu": None if limit is None else limit.gpu,
            "backend": spec.backend,
            "strict_fifo": spec.strict_fifo,
            "budget": None if spec.budget is None else spec.budget.model_dump(mode="json"),
        }
        with self.catalog.session() as session:
            record = session.scalars(select(QueueRecord).where(QueueRecord.name == spec.name)).first()
            if record is None:
                record = QueueRecord(name=spec.name, **values)
                session.add(record)
            else:
                for key, value in values.items():
                    setattr(record, key, value)
                record.updated_at = utcnow()
            session.flush()
            return record

    def queues(self) -> list[QueueRecord]:
        """Every queue, by name."""
        with self.catalog.session() as session:
            return list(session.scalars(select(QueueRecord).order_by(QueueRecord.name)).all())

    def queue(self, name: str) -> QueueRecord | None:
        """One queue, or None."""
        with self.catalog.session() as session:
            return session.scalars(select(QueueRecord).where(QueueRecord.name == name)).first()


def queue_info(record: QueueRecord, *, used: ResourceSpec, running: int, pending: int) -> QueueInfo:
    """A queue's spec plus what it holds now."""
    spec = queue_spec_of(record)
    return QueueInfo(**spec.model_dump(), used=used, running=running, pending=pending,
                     created_at=record.created_at, updated_at=record.updated_at)
