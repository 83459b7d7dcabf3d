"""One Delta table on disk or object storage: commits with recplane metadata, reads, time travel.

This is the thin layer over ``deltalake`` (delta-rs). Every write is one Delta commit and therefore one
dataset version; recplane's own facts about a commit (author, schema version, ingestion batch ids) travel
inside the commit as ``recplane.*`` custom metadata, so the table alone can tell its story. Small appends to
tables on local disk take :mod:`recplane.lake.blind_append` (≈1 ms a commit instead of delta-rs's 6-25 ms);
every other write goes through delta-rs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake import Field as DeltaField
from deltalake.exceptions import TableNotFoundError

from recplane.errors import InvalidInput, NotFound
from recplane.lake.blind_append import (
    AppendPlan,
    BlindAppender,
    BlindAppendUnavailable,
    ConcurrentChange,
    local_root,
)

__all__ = ["META_PREFIX", "DeltaDataset", "to_logical"]

log = logging.getLogger(__name__)

META_PREFIX = "recplane."
# Files under this size are worth merging; compaction leaves larger ones alone.
SMALL_FILE_BYTES = 16 * 1024 * 1024
SchemaMode = Literal["merge", "overwrite"] | None


def _commit(
    metadata: Mapping[str, Any], app_transactions: list[Transaction] | None = None
) -> CommitProperties:
    custom = {
        key if key.startswith(META_PREFIX) else META_PREFIX + key: v if isinstance(v, str) else json.dumps(v)
        for key, v in metadata.items()
    }
    return CommitProperties(custom_metadata=custom, app_transactions=app_transactions or None)


def to_logical(table: pa.Table, logical: pa.Schema) -> pa.Table:
    """Cast a stored table to the logical schema (lists back to fixed-size vectors) for the columns it has."""
    fields = []
    for field in table.schema:
        index = logical.get_field_index(field.name)
        fields.append(logical.field(index) if index >= 0 else field)
    target = pa.schema(fields)
    return table if table.schema.equals(target) else table.cast(target)


class DeltaDataset:
    """A Delta table plus the commit conventions recplane uses."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._table: DeltaTable | None = None
        root = local_root(uri)
        self._appender = BlindAppender(uri, root) if root is not None else None
        self._plan: tuple[int, AppendPlan | None] = (-1, None)  # (snapshot version, its plan)
        self._own_version = -1  # the newest version this handle committed itself (blind appends)

    @classmethod
    def create(
        cls,
        uri: str,
        schema: pa.Schema,
        *,
        partition_by: list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> DeltaDataset:
        """Create an empty table (version 0) with the given storage schema."""
        write_deltalake(
            uri,
            schema.empty_table(),
            mode="error",
            partition_by=partition_by or None,
            commit_properties=_commit({"operation": "create", **(metadata or {})}),
        )
        return cls(uri)

    @property
    def table(self) -> DeltaTable:
        """The live DeltaTable handle, loaded once and refreshed incrementally."""
        if self._table is None:
            try:
                self._table = DeltaTable(self.uri)
            except TableNotFoundError as exc:
                raise NotFound(f"No Delta table at {self.uri}.") from exc
        return self._table

    def refresh(self) -> DeltaTable:
        """Bring the handle up to the newest committed version (other writers may have committed)."""
        self.table.update_incremental()
        return self.table

    def version(self) -> int:
        """The newest committed version."""
        return self.refresh().version()

    def known_version(self) -> int:
        """The newest version this handle has loaded or committed, without reading the log again."""
        return max(self.table.version(), self._own_version)

    def latest_version(self) -> int:
        """The newest committed version, found cheaply: on local disk by looking for the next log entries
        (a file check each) instead of loading them into the handle."""
        if self._appender is None:
            return self.version()
        version = self.known_version()
        while self._appender.has_entry(version + 1):
            version += 1
        return version

    def append(
        self,
        data: pa.Table | pa.RecordBatchReader,
        *,
        metadata: Mapping[str, Any] | None = None,
        schema_mode: SchemaMode = None,
        app_transactions: list[Transaction] | None = None,
    ) -> int:
        """Append rows as one commit and return its version.

        ``app_transactions`` records stream positions (Delta transaction identifiers) in the same commit.
        """
        properties = _commit({"operation": "append", **(metadata or {})}, app_transactions)
        if schema_mode is None and isinstance(data, pa.Table):
            version = self._blind_append(data, properties)
            if version is not None:
                return version
        if self._own_version > self.table.version():
            self.refresh()  # delta-rs would otherwise rebase over every blind append since its snapshot
        write_deltalake(self.table, data, mode="append", schema_mode=schema_mode, commit_properties=properties)
        # The handle now stands at this commit; refreshing could skip to another writer's newer one.
        return self.table.version()

    def _blind_append(self, data: pa.Table, properties: CommitProperties) -> int | None:
        """Commit through :mod:`recplane.lake.blind_append` when it may write this table and data; else None."""
        if self._appender is None:
            return None
        if self._plan[0] != self.table.version():
            self._plan = (self.table.version(), AppendPlan.of(self.table))
        plan = self._plan[1]
        if plan is None or not plan.accepts(data):
            return None
        try:
            version = self._appender.append(
                data,
                plan,
                after=self.known_version(),
                custom_metadata=properties.custom_metadata,
                transactions=properties.app_transactions,
            )
        except ConcurrentChange:
            self.refresh()
            return None
        except BlindAppendUnavailable:
            log.warning("Appends to %s go through delta-rs: its file system has no hard links", self.uri)
            self._appender = None
            return None
        self._own_version = version
        return version

    def overwrite(
        self,
        data: pa.Table | pa.RecordBatchReader,
        *,
        metadata: Mapping[str, Any] | None = None,
        schema_mode: SchemaMode = None,
        predicate: str | None = None,
    ) -> int:
        """Replace the table's contents (or the rows matching ``predicate``) as one commit."""
        write_deltalake(
            self.table,
            data,
            mode="overwrite",
            schema_mode=schema_mode,
            predicate=predicate,
            commit_properties=_commit({"operation": "overwrite", **(metadata or {})}),
        )
        return self.version()

    def add_columns(self, fields: list[pa.Field], *, metadata: Mapping[str, Any] | None = None) -> int:
        """Add nullable columns as one metadata-only commit (old rows read them as null)."""
        self.table.alter.add_columns(
            [DeltaField.from_arrow(field) for field in fields],
            commit_properties=_commit({"operation": "schema-change", **(metadata or {})}),
        )
        return self.version()

    def rewrite(self, schema: pa.Schema, *, metadata: Mapping[str, Any] | None = None) -> int:
        """Rewrite every row in ``schema`` as one new version; older versions keep their files and types.

        Rows stream batch by batch from the current files into the new ones, so memory stays bounded by a
        few record batches, but the whole table is read and written once.
        """
        current = self.refresh()
        stored = pa.schema(current.schema().to_arrow())
        kept = [schema.field(name) if name in schema.names else stored.field(name) for name in stored.names]
        target = pa.schema(kept + [field for field in schema if field.name not in stored.names])
        batches = (_conform(batch, target) for batch in current.to_pyarrow_dataset().to_batches())
        write_deltalake(
            current,
            pa.RecordBatchReader.from_batches(target, batches),
            mode="overwrite",
            schema_mode="overwrite",
            commit_properties=_commit({"operation": "schema-change", **(metadata or {})}),
        )
        return self.version()

    def compact(
        self, *, target_size: int | None = None, metadata: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Merge small files into larger ones (a new version with the same rows); returns Delta's metrics."""
        return self.refresh().optimize.compact(
            target_size=target_size,
            commit_properties=_commit({"operation": "compact", **(metadata or {})}),
        )

    def delete(self, predicate: str, *, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Delete the rows matching a SQL predicate as one commit; returns Delta's metrics."""
        return self.refresh().delete(
            predicate, commit_properties=_commit({"operation": "delete", **(metadata or {})})
        )

    def vacuum(self, *, metadata: Mapping[str, Any] | None = None) -> list[str]:
        """Delete the files that commits removed (compaction, deletes, rewrites) at once.

        Time travel to any version that used those files ends. Files of writes still in flight are not in
        the log yet and are left alone (this is not a "full" vacuum).
        """
        return self.refresh().vacuum(
            retention_hours=0,
            enforce_retention_duration=False,
            dry_run=False,
            commit_properties=_commit({"operation": "vacuum", **(metadata or {})}),
        )

    def live_files(self) -> int:
        """How many data files the newest version references."""
        return len(self.refresh().file_uris())

    def small_files(self, below_bytes: int = SMALL_FILE_BYTES) -> int:
        """How many data files of the newest version are smaller than ``below_bytes`` (compaction candidates)."""
        sizes = pa.table(self.refresh().get_add_actions(flatten=True))["size_bytes"]
        return int(pc.sum(pc.less(sizes, below_bytes)).as_py() or 0)

    def snapshot(self, version: int | None = None, as_of: datetime | None = None) -> DeltaTable:
        """A read-only handle at a version or a point in time (the newest version when neither is given)."""
        if version is not None and as_of is not None:
            raise InvalidInput("Give either version or as_of, not both.")
        current = self.refresh()
        if version is None and as_of is None:
            return current
        snapshot = DeltaTable(self.uri)
        if version is not None:
            if not 0 <= version <= current.version():
                raise NotFound(f"Version {version} does not exist; versions are 0..{current.version()}.")
            snapshot.load_as_version(version)
            return snapshot
        assert as_of is not None
        moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        created = _created_at(current)
        if moment < created:
            # delta-rs silently returns version 0 for a moment before the table existed; refuse instead.
            raise NotFound(
                f"as_of {moment.isoformat()} is before the dataset existed (created {created.isoformat()})."
            )
        snapshot.load_as_version(moment)
        return snapshot

    def read(
        self,
        version: int | None = None,
        as_of: datetime | None = None,
        columns: list[str] | None = None,
        filter: pads.Expression | None = None,
    ) -> pa.Table:
        """Rows at a version or point in time, in the stored schema."""
        dataset = self.snapshot(version, as_of).to_pyarrow_dataset()
        return dataset.to_table(columns=columns, filter=filter)

    def history(self) -> list[dict[str, Any]]:
        """Every commit, newest first, with recplane's custom metadata decoded."""
        return [_decode(entry) for entry in self.refresh().history()]


def _conform(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """Cast a batch to ``target``; columns it lacks (added by a schema change) become nulls."""
    arrays = [
        batch.column(field.name).cast(field.type) if field.name in batch.schema.names
        else pa.nulls(batch.num_rows, field.type)
        for field in target
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=target)


def _created_at(table: DeltaTable) -> datetime:
    oldest = table.history()[-1]
    return datetime.fromtimestamp(oldest["timestamp"] / 1000, tz=UTC)


def _decode(entry: dict[str, Any]) -> dict[str, Any]:
    decoded = dict(entry)
    for key, value in entry.items():
        if key.startswith(META_PREFIX) and isinstance(value, str):
            try:
                decoded[key] = json.loads(value)
            except json.JSONDecodeError:
                decoded[key] = value
    return decoded
