"""What the dataset service answers: facts about datasets, versions, schema changes, stats and maintenance.

These pydantic models are also the REST response schemas, so every field is JSON-friendly: timestamps are
timezone-aware UTC datetimes, column minima/maxima are JSON scalars (timestamps and dates as ISO strings).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ColumnStats",
    "DatasetInfo",
    "DatasetStats",
    "DatasetVersion",
    "JsonScalar",
    "MaintenanceResult",
    "SchemaChangeResult",
    "WidenedColumn",
]

JsonScalar = str | int | float | bool | None


class DatasetInfo(BaseModel):
    """A registered dataset: owner, location, declared spec and newest version."""

    name: str
    team: str
    description: str = ""
    location: str
    schema_version: int = Field(description="The schema version in force now (1 at creation).")
    spec: dict[str, Any] = Field(description="The current dataset spec, as YAML/JSON.")
    current_version: int = Field(description="The newest Delta version (commit number).")
    created_at: datetime
    updated_at: datetime


class DatasetVersion(BaseModel):
    """One commit of a dataset: what happened, how many rows it added or removed, and who did it."""

    version: int
    timestamp: datetime
    operation: str = Field(
        description="create, append, overwrite, schema-change, compact, retention, vacuum, or the Delta name."
    )
    rows_added: int = 0
    rows_removed: int = 0
    schema_version: int
    author: str | None = None
    batch_count: int | None = Field(default=None, description="Ingestion batches merged into this commit.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Other recplane facts of the commit (keys without 'recplane.')."
    )


class WidenedColumn(BaseModel):
    """A column whose type was widened (e.g. int32 to int64)."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, validate_by_alias=True)

    column: str
    from_: str = Field(alias="from")
    to: str


class SchemaChangeResult(BaseModel):
    """The outcome of applying a spec to a dataset."""

    dataset: str
    action: Literal["created", "unchanged", "evolved"]
    schema_version: int
    added_columns: list[str] = Field(default_factory=list)
    widened_columns: list[WidenedColumn] = Field(default_factory=list)
    relaxed_columns: list[str] = Field(
        default_factory=list, description="Columns that were non-nullable and now accept nulls."
    )
    metadata_changes: list[str] = Field(
        default_factory=list, description="Spec fields changed without touching the data (description ...)."
    )
    delta_version: int | None = Field(default=None, description="The Delta version carrying the change.")
    message: str


class ColumnStats(BaseModel):
    """Profile of one column at one version."""

    name: str
    type: str
    null_count: int
    null_rate: float = Field(description="Share of rows that are null (0 on an empty dataset).")
    min: JsonScalar = None
    max: JsonScalar = None
    distinct_estimate: int | None = Field(default=None, description="Estimated distinct non-null values.")


class DatasetStats(BaseModel):
    """Size and per-column profile of a dataset at one version."""

    name: str
    version: int
    rows: int
    bytes: int
    files: int
    columns: list[ColumnStats]


class MaintenanceResult(BaseModel):
    """The outcome of a compaction or a retention run."""

    dataset: str
    operation: Literal["compact", "retention"]
    version: int = Field(description="The Delta version after the operation.")
    files_removed: int = 0
    files_added: int = 0
    rows_removed: int = 0
    details: dict[str, Any] = Field(default_factory=dict)
