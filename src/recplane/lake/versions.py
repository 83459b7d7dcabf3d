"""Versions of a dataset: which schema was in force at a Delta version, and what each commit did.

Delta numbers every commit; recplane numbers schemas. A :class:`SchemaTimeline` maps the first onto the
second (each schema version is valid from its ``first_delta_version`` on), so a read at any version comes
back in the logical types of its day. :func:`commit_to_version` turns a Delta commit (with recplane's
``recplane.*`` custom metadata) into a :class:`~recplane.lake.info.DatasetVersion`.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from recplane.lake.info import DatasetVersion
from recplane.lake.spec import ColumnSpec, DatasetSpec
from recplane.lake.table import META_PREFIX

__all__ = ["SchemaEntry", "SchemaTimeline", "columns_document", "commit_to_version"]

_DELTA_OPERATIONS = {
    "CREATE TABLE": "create",
    "DELETE": "delete",
    "OPTIMIZE": "compact",
    "ADD COLUMN": "schema-change",
    "VACUUM START": "vacuum",
    "VACUUM END": "vacuum",
    "MERGE": "merge",
}
_ADDED_METRICS = ("num_added_rows", "num_target_rows_inserted")
_REMOVED_METRICS = ("num_deleted_rows", "num_target_rows_deleted")
_OWN_KEYS = ("operation", "author", "rows_added", "rows_removed", "batch_count", "schema_version")


def columns_document(spec: DatasetSpec) -> dict[str, Any]:
    """The JSON stored with a schema version: the columns in order, with type and nullability."""
    return {"columns": [{"name": name, **column.model_dump()} for name, column in spec.columns.items()]}


@dataclass(frozen=True)
class SchemaEntry:
    """One schema version and the first Delta version it applies to."""

    schema_version: int
    first_delta_version: int
    columns: dict[str, Any]

    def arrow_schema(self) -> pa.Schema:
        """The logical Arrow schema of this schema version."""
        fields = []
        for column in self.columns["columns"]:
            spec = ColumnSpec(type=column["type"], nullable=column.get("nullable", True))
            fields.append(pa.field(column["name"], spec.arrow, nullable=spec.nullable))
        return pa.schema(fields)


class SchemaTimeline:
    """Every schema version of a dataset, ordered by the Delta version where it starts."""

    def __init__(self, entries: list[SchemaEntry]) -> None:
        self.entries = sorted(entries, key=lambda e: (e.first_delta_version, e.schema_version))
        self._starts = [entry.first_delta_version for entry in self.entries]

    def entry_at(self, delta_version: int) -> SchemaEntry:
        """The schema version in force at ``delta_version`` (the first one for anything older)."""
        index = max(bisect_right(self._starts, delta_version) - 1, 0)
        return self.entries[index]

    def version_at(self, delta_version: int) -> int:
        """The schema version number in force at ``delta_version``."""
        return self.entry_at(delta_version).schema_version


def _operation(commit: dict[str, Any]) -> str:
    own = commit.get(META_PREFIX + "operation")
    if isinstance(own, str):
        return own
    delta = str(commit.get("operation", "unknown"))
    if delta == "WRITE":
        mode = str(commit.get("operationParameters", {}).get("mode", "")).lower()
        return "overwrite" if mode == "overwrite" else "append"
    return _DELTA_OPERATIONS.get(delta, delta.lower().replace(" ", "-"))


def _metric(commit: dict[str, Any], own_key: str, delta_keys: tuple[str, ...]) -> int:
    own = commit.get(META_PREFIX + own_key)
    if isinstance(own, int):
        return own
    metrics = commit.get("operationMetrics") or {}
    return next((int(metrics[key]) for key in delta_keys if isinstance(metrics.get(key), int)), 0)


def _batch_count(commit: dict[str, Any]) -> int | None:
    count = commit.get(META_PREFIX + "batch_count")
    if isinstance(count, int):
        return count
    batch_ids = commit.get(META_PREFIX + "batch_ids")
    return len(batch_ids) if isinstance(batch_ids, list) else None


def commit_to_version(commit: dict[str, Any], timeline: SchemaTimeline) -> DatasetVersion:
    """A Delta history entry (from DeltaDataset.history) as a DatasetVersion."""
    version = int(commit["version"])
    author = commit.get(META_PREFIX + "author")
    extra = {
        key.removeprefix(META_PREFIX): value
        for key, value in commit.items()
        if key.startswith(META_PREFIX) and key.removeprefix(META_PREFIX) not in _OWN_KEYS
    }
    return DatasetVersion(
        version=version,
        timestamp=datetime.fromtimestamp(int(commit["timestamp"]) / 1000, tz=UTC),
        operation=_operation(commit),
        rows_added=_metric(commit, "rows_added", _ADDED_METRICS),
        rows_removed=_metric(commit, "rows_removed", _REMOVED_METRICS),
        schema_version=timeline.version_at(version),
        author=str(author) if author is not None else None,
        batch_count=_batch_count(commit),
        metadata={"delta_operation": commit.get("operation"), **extra},
    )
