"""The catalog schema: every piece of metadata recplane keeps, as SQLAlchemy ORM tables.

Changes to this file need a new Alembic migration under ``catalog/migrations/versions``; a unit test
compares the migrated schema with these tables so the two cannot drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AliasEventRecord",
    "ApiToken",
    "Base",
    "DatasetRecord",
    "FeatureDefinitionRecord",
    "IngestBatch",
    "JobEventRecord",
    "JobRecord",
    "JobUsageRecord",
    "ModelAliasRecord",
    "ModelVersionRecord",
    "PipelineRecord",
    "PipelineRunRecord",
    "QualityReportRecord",
    "QueueRecord",
    "RegisteredModelRecord",
    "SchemaVersion",
    "StepCacheRecord",
    "StepRunRecord",
    "TrainingRun",
    "TrainingRunEpoch",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the catalog stores UTC only)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class ApiToken(Base):
    """An API token of one team. Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class DatasetRecord(Base):
    """A registered dataset: its owner, where its Delta table lives and its declared spec."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    team: Mapped[str] = mapped_column(String(128), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SchemaVersion(Base):
    """One schema of a dataset, valid from a Delta version on."""

    __tablename__ = "schema_versions"
    __table_args__ = (UniqueConstraint("dataset", "schema_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(256), index=True)
    schema_version: Mapped[int] = mapped_column(Integer)
    columns: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_delta_version: Mapped[int] = mapped_column(BigInteger)
    change: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IngestBatch(Base):
    """An acknowledged ingestion batch, by idempotency key: a retry with the same key is a no-op."""

    __tablename__ = "ingest_batches"
    __table_args__ = (UniqueConstraint("dataset", "batch_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(256), index=True)
    batch_id: Mapped[str] = mapped_column(String(256))
    delta_version: Mapped[int] = mapped_column(BigInteger)
    accepted: Mapped[int] = mapped_column(BigInteger)
    rejected: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QualityReportRecord(Base):
    """A stored data-quality report of one dataset version."""

    __tablename__ = "quality_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(256), index=True)
    delta_version: Mapped[int] = mapped_column(BigInteger)
    passed: Mapped[bool] = mapped_column(default=True)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """One training run: what was trained on which data version, by which code, how it ended, where its files are.

    ``group`` names a family of runs (a tuning study); ``parent_id`` points a trial at its study's run.
    """

    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    team: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    git_sha: Mapped[str | None] = mapped_column(String(40), default=None)
    git_dirty: Mapped[bool | None] = mapped_column(default=None)
    recplane_version: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(256), index=True, default=None)
    dataset_version: Mapped[int | None] = mapped_column(BigInteger, default=None)
    item_features: Mapped[str | None] = mapped_column(String(256), default=None)
    item_features_version: Mapped[int | None] = mapped_column(BigInteger, default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifacts_uri: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("training_runs.id", ondelete="SET NULL"), index=True, default=None
    )
    group: Mapped[str | None] = mapped_column(String(256), index=True, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class TrainingRunEpoch(Base):
    """One epoch of a training run: mean loss, validation metrics and its duration."""

    __tablename__ = "training_run_epochs"
    __table_args__ = (UniqueConstraint("run_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("training_runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float, default=None)
    valid: Mapped[dict[str, Any]] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float)


class FeatureDefinitionRecord(Base):
    """One version of a feature definition (entity, feature view or feature service), as its spec JSON.

    Versions only grow: a changed definition gets a new row, and a deleted one a row with ``deleted`` set, so
    a training set's lineage can always name the exact definition it used.
    """

    __tablename__ = "feature_definitions"
    __table_args__ = (UniqueConstraint("kind", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    deleted: Mapped[bool] = mapped_column(default=False)
    author: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegisteredModelRecord(Base):
    """A registered model: a named, team-owned family of numbered model versions."""

    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    team: Mapped[str] = mapped_column(String(128), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelVersionRecord(Base):
    """One immutable version of a registered model: its artifact folder, signature, params, metrics and lineage.

    ``(name, version)`` is unique, so two concurrent registrations cannot both take the same number: the loser
    retries with the next one.
    """

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[int] = mapped_column(Integer)
    artifact_uri: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    model_class: Mapped[str] = mapped_column(String(128))
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)
    run_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAliasRecord(Base):
    """Where an alias of a model (``production``, ``candidate``, any name) points now."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("name", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    alias: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasEventRecord(Base):
    """One alias move: who moved which alias of a model from which version to which, when and why.

    Written in the same transaction as the alias change, so the history can answer "which version was in
    production at time T". ``to_version`` is null when the alias was deleted, ``from_version`` when it was created.
    """

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    alias: Mapped[str] = mapped_column(String(128), index=True)
    from_version: Mapped[int | None] = mapped_column(Integer, default=None)
    to_version: Mapped[int | None] = mapped_column(Integer, default=None)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class JobRecord(Base):
    """One job of the scheduler: what to run (kind, spec, entrypoint), for whom (team, queue, priority), with which
    resources (per worker, times ``workers`` for a gang), and where it stands (status, attempts, backend handle).

    ``checkpoint`` and ``result`` are written by the job's own process; the scheduler writes everything else.
    ``stop_requested`` (preempt, cancel, timeout) is set while a running job is being stopped.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    kind: Mapped[str] = mapped_column(String(32), index=True)
    team: Mapped[str] = mapped_column(String(128), index=True)
    queue: Mapped[str] = mapped_column(String(128), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    cpu: Mapped[float] = mapped_column(Float)
    memory_gb: Mapped[float] = mapped_column(Float)
    gpu: Mapped[float] = mapped_column(Float, default=0.0)
    workers: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    backoff_seconds: Mapped[float] = mapped_column(Float, default=1.0)
    timeout_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    entrypoint: Mapped[str | None] = mapped_column(Text, default=None)
    env: Mapped[dict[str, Any]] = mapped_column(JSON)
    pipeline: Mapped[str | None] = mapped_column(String(256), index=True, default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    admitted_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    not_before: Mapped[datetime | None] = mapped_column(default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    checkpoint: Mapped[str | None] = mapped_column(Text, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    backend: Mapped[str | None] = mapped_column(String(32), default=None)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    borrowed: Mapped[bool] = mapped_column(default=False)
    preempted_count: Mapped[int] = mapped_column(Integer, default=0)
    stop_requested: Mapped[str | None] = mapped_column(String(16), default=None)
    stop_requested_at: Mapped[datetime | None] = mapped_column(default=None)


class JobEventRecord(Base):
    """One status change of a job (``from_status`` is null at submission), with the reason in words."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16), default=None)
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class QueueRecord(Base):
    """A job queue of one team: nominal quotas, the cohort it lends to and borrows from, limits and backend.

    A null borrowing limit means "any idle quota of the cohort"; ``budget`` optionally caps usage per window.
    """

    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    team: Mapped[str] = mapped_column(String(128), index=True)
    cohort: Mapped[str | None] = mapped_column(String(128), index=True, default=None)
    nominal_cpu: Mapped[float] = mapped_column(Float)
    nominal_memory_gb: Mapped[float] = mapped_column(Float)
    nominal_gpu: Mapped[float] = mapped_column(Float, default=0.0)
    borrowing_limit_cpu: Mapped[float | None] = mapped_column(Float, default=None)
    borrowing_limit_memory_gb: Mapped[float | None] = mapped_column(Float, default=None)
    borrowing_limit_gpu: Mapped[float | None] = mapped_column(Float, default=None)
    backend: Mapped[str] = mapped_column(String(32), default="local")
    strict_fifo: Mapped[bool] = mapped_column(default=False)
    budget: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobUsageRecord(Base):
    """The usage ledger: what one attempt of a job consumed, charged to its team, queue, kind and pipeline.

    CPU seconds and memory GB-seconds are measured (sampled process trees); GPU seconds are the GPUs held times
    the wall time (nothing measures GPU use on a CPU machine).
    """

    __tablename__ = "job_usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    team: Mapped[str] = mapped_column(String(128), index=True)
    queue: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    pipeline: Mapped[str | None] = mapped_column(String(256), index=True, default=None)
    outcome: Mapped[str] = mapped_column(String(16))
    cpu_seconds: Mapped[float] = mapped_column(Float)
    gpu_seconds: Mapped[float] = mapped_column(Float)
    memory_gb_seconds: Mapped[float] = mapped_column(Float)
    wall_seconds: Mapped[float] = mapped_column(Float)
    peak_memory_gb: Mapped[float] = mapped_column(Float, default=0.0)
    at: Mapped[datetime] = mapped_column(index=True, default=utcnow)


class PipelineRecord(Base):
    """One version of a pipeline: its DAG spec (JSON), cron schedule and dataset triggers.

    ``trigger_baseline`` holds each trigger dataset's version when this version was applied: only newer versions
    start runs.
    """

    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_pipelines_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    team: Mapped[str] = mapped_column(String(128), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    schedule: Mapped[str | None] = mapped_column(String(128), default=None)
    triggers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    trigger_baseline: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PipelineRunRecord(Base):
    """One run of a pipeline version with its params, why it started (``trigger``) and where it stands.

    ``dedup_key`` (unique) names a scheduled slot or a triggering dataset version, so two control planes (or one
    restarted mid-decision) never start the same scheduled run twice.
    """

    __tablename__ = "pipeline_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128), index=True)
    pipeline_version: Mapped[int] = mapped_column(Integer)
    team: Mapped[str] = mapped_column(String(128), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    trigger: Mapped[str] = mapped_column(String(16), default="manual")
    trigger_detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedup_key: Mapped[str | None] = mapped_column(String(512), unique=True, default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(index=True, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class StepRunRecord(Base):
    """One step of a pipeline run: its job (if it ran one), cache key, resolved inputs and outputs (JSON)."""

    __tablename__ = "step_runs"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_step_runs_run_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    cache_key: Mapped[str | None] = mapped_column(String(64), default=None)
    cached_from: Mapped[str | None] = mapped_column(String(32), default=None)
    inputs: Mapped[Any] = mapped_column(JSON, default=None)
    outputs: Mapped[Any] = mapped_column(JSON, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    submitted_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class StepCacheRecord(Base):
    """The step cache: a cache key (hash of the step's code, resolved inputs and params) → the outputs it gave."""

    __tablename__ = "step_cache"

    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128), index=True)
    step: Mapped[str] = mapped_column(String(128))
    outputs: Mapped[Any] = mapped_column(JSON, default=None)
    run_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
