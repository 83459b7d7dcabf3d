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
    "ApiToken",
    "Base",
    "DatasetRecord",
    "FeatureDefinitionRecord",
    "IngestBatch",
    "QualityReportRecord",
    "SchemaVersion",
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
