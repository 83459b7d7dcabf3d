"""The dataset service: versioned datasets on Delta Lake, owned by teams, described by specs.

A dataset is a Delta table plus its spec in the catalog. Every commit is a version; every accepted schema
change is a schema version valid from a Delta version on, so reads at any version come back in the types of
their day. Each dataset ``x`` gets a dead-letter dataset ``x__rejected`` for rows that failed validation.
Every method checks that the calling principal's team owns the dataset. Ingestion appends; :meth:`replace`
swaps the whole content for a new one as a single version.
"""

from __future__ import annotations

import builtins
import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from deltalake import DeltaTable
from sqlalchemy import select

from recplane.auth import Principal
from recplane.catalog import Catalog, DatasetRecord, SchemaVersion
from recplane.config import Settings
from recplane.errors import AlreadyExists, InvalidInput, InvalidSpec, NotFound
from recplane.lake.evolution import SchemaPlan, plan_schema_change
from recplane.lake.info import (
    DatasetInfo,
    DatasetStats,
    DatasetVersion,
    MaintenanceResult,
    SchemaChangeResult,
    WidenedColumn,
)
from recplane.lake.maintenance import automatic_target, compact_table, retain_table
from recplane.lake.spec import ColumnSpec, DatasetSpec, load_spec
from recplane.lake.stats import dataset_stats
from recplane.lake.table import DeltaDataset, to_logical
from recplane.lake.versions import SchemaEntry, SchemaTimeline, columns_document, commit_to_version

if TYPE_CHECKING:
    from recplane.ingest.validation import Validated

__all__ = [
    "REJECTED_SUFFIX",
    "DatasetService",
    "OpenDataset",
    "rejected_name",
    "rejected_spec",
    "replacement_table",
]

REJECTED_SUFFIX = "__rejected"
_MAX_NAME = 128 - len(REJECTED_SUFFIX)
SpecSource = DatasetSpec | dict[str, Any] | str | Path
# Commit metadata recplane writes itself: history and the ingestion ledger read these keys back.
_OWN_METADATA = frozenset(
    {"operation", "author", "schema_version", "rows_added", "rows_removed", "batch_ids", "batch_rows", "batch_count"}
)
_SHOWN_PROBLEMS = 5


def rejected_name(name: str) -> str:
    """The name of the dead-letter dataset of ``name``."""
    return name + REJECTED_SUFFIX


def rejected_spec(spec: DatasetSpec) -> DatasetSpec:
    """The spec of the dead-letter dataset that keeps the rows of ``spec`` that failed validation."""
    return DatasetSpec(
        name=rejected_name(spec.name),
        team=spec.team,
        description=f"Rows rejected by validation on their way into {spec.name!r}.",
        columns={
            "raw": ColumnSpec(type="string", description="The rejected row as JSON text."),
            "reason": ColumnSpec(type="string", nullable=False, description="Why it was rejected."),
            "received_at": ColumnSpec(type="timestamp", nullable=False, description="When it arrived."),
            "batch_id": ColumnSpec(type="string", description="The ingestion batch it came in."),
            "source": ColumnSpec(type="string", description="Where it came from (API, stream, file ...)."),
        },
        event_time="received_at",
        retention=spec.retention,
    )


@dataclass(frozen=True)
class OpenDataset:
    """A dataset ready for reading and writing: its facts, current spec and Delta table handle."""

    info: DatasetInfo
    spec: DatasetSpec
    table: DeltaDataset

    @property
    def name(self) -> str:
        """The dataset's name."""
        return self.info.name


def replacement_table(data: Any) -> pa.Table:
    """The new content of a replace as one Arrow table: from a pyarrow Table, a pandas DataFrame or row dicts.

    Row dicts become one column per key seen in any row (missing keys are null); the values keep their Python
    types and are validated and converted to the dataset's types by :meth:`DatasetService.replace`.
    """
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if isinstance(data, list):
        return _rows_table(data)
    if type(data).__module__.startswith("pandas") and hasattr(data, "columns"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise InvalidInput(
        f"Cannot replace a dataset with a {type(data).__name__}: give a pyarrow.Table, a pandas.DataFrame "
        f"or a list of row dicts."
    )


def _rows_table(rows: builtins.list[Any]) -> pa.Table:
    wrong = next((index for index, row in enumerate(rows) if not isinstance(row, dict)), None)
    if wrong is not None:
        raise InvalidInput(f"Row {wrong} is a {type(rows[wrong]).__name__}, not a dict of column values.")
    names = builtins.list(dict.fromkeys(key for row in rows for key in row))
    columns = {}
    for name in names:
        try:
            columns[name] = pa.array([row.get(name) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInput(
                f"Column {name!r} holds values that cannot be one Arrow column ({exc}); give every row the same "
                f"kind of value there, or pass a pyarrow.Table."
            ) from exc
    return pa.table(columns)


def _commit_extras(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Caller metadata for a commit: JSON values under keys recplane does not write itself."""
    extras = dict(metadata or {})
    taken = sorted(key for key in extras if key.removeprefix("recplane.") in _OWN_METADATA)
    if taken:
        raise InvalidInput(f"Commit metadata key(s) {taken} are recorded by recplane itself; choose other names.")
    try:
        json.dumps(extras)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"Commit metadata must be JSON (strings, numbers, lists, dicts): {exc}.") from exc
    return extras


def _shown(problems: builtins.list[str], total: int) -> str:
    more = f"; and {total - len(problems)} more" if total > len(problems) else ""
    return "; ".join(problems) + more


def _replacement_rows(spec: DatasetSpec, data: pa.Table) -> pa.Table:
    """``data`` validated and converted to the storage schema, or InvalidInput naming the first problems."""
    # Ingestion owns the row rules; importing them here (not at module load) keeps lake importable on its own.
    from recplane.ingest.dedup import split_duplicates
    from recplane.ingest.validation import Validator

    validator = Validator(spec)
    if data.num_columns == 0 and data.num_rows == 0:
        return validator.storage.empty_table()
    validated = validator.validate_batch(data, mode="arrow")
    if validated.rejected:
        raise InvalidInput(
            f"{validated.rejected} of {data.num_rows} rows cannot go into dataset {spec.name!r}, so nothing was "
            f"replaced (a replace is all or nothing): {_rejections(validated)}. Fix or drop those rows "
            f"and replace again."
        )
    split = split_duplicates(validated.accepted, builtins.list(spec.dedup_key))
    if split.duplicate_rows:
        pairs = zip(split.duplicate_rows, split.reasons, strict=True)
        shown = [
            f"row {row}: {reason.removesuffix(': repeated in the same commit')} as an earlier row"
            for row, reason in itertools.islice(pairs, _SHOWN_PROBLEMS)
        ]
        raise InvalidInput(
            f"{len(split.duplicate_rows)} row(s) repeat the dedup key {spec.dedup_key} of dataset {spec.name!r}, "
            f"so nothing was replaced: {_shown(shown, len(split.duplicate_rows))}. Keep one row per key."
        )
    return validated.accepted


def _rejections(validated: Validated) -> str:
    """The first rejected rows of a validated batch with their reasons, for a replace's error message."""
    pairs = zip(validated.rejected_rows, validated.rejected_reasons, strict=True)
    shown = [f"row {row}: {reason}" for row, reason in itertools.islice(pairs, _SHOWN_PROBLEMS)]
    return _shown(shown, validated.rejected)


class _ValidatedStream:
    """A replace's batches, validated as the Delta writer reads them (all or nothing, as a whole-table replace)."""

    def __init__(self, spec: DatasetSpec, source: pa.RecordBatchReader) -> None:
        from recplane.ingest.validation import Validator  # see _replacement_rows

        self.validator = Validator(spec)
        self.spec = spec
        self.source = source
        self.rows = 0
        self.error: BaseException | None = None

    def overwrite(self, table: DeltaDataset, metadata: dict[str, Any]) -> int:
        """Write the stream as one new version of ``table``; the reader's or validation's own error if one stops it."""
        reader = pa.RecordBatchReader.from_batches(self.validator.storage, self._batches())
        try:
            return table.overwrite(reader, metadata=metadata)
        except Exception:
            # The writer reports a failed stream as a generic Delta error: raise what stopped the stream instead.
            if self.error is not None:
                raise self.error from None
            raise

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self.source:
                validated = self.validator.validate_batch(batch, mode="arrow", offset=self.rows)
                if validated.rejected:
                    raise InvalidInput(
                        f"{validated.rejected} rows of a batch cannot go into dataset {self.spec.name!r}, so nothing "
                        f"was replaced (a replace is all or nothing): {_rejections(validated)}."
                    )
                self.rows += batch.num_rows
                yield from validated.accepted.to_batches()
        except BaseException as exc:
            self.error = exc
            raise


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _validate_quality(spec: DatasetSpec) -> None:
    if not spec.quality:
        return
    try:
        from recplane.quality import parse_rules  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    parse_rules(spec.quality, spec)


def _user_spec(source: SpecSource) -> DatasetSpec:
    spec = load_spec(source)
    if spec.name.endswith(REJECTED_SUFFIX):
        raise InvalidSpec(
            f"Dataset names ending in {REJECTED_SUFFIX!r} are reserved for dead-letter datasets, "
            f"which recplane creates itself: rename {spec.name!r}."
        )
    if len(spec.name) > _MAX_NAME:
        raise InvalidSpec(f"Dataset name {spec.name!r} is longer than {_MAX_NAME} characters; shorten it.")
    return spec


class DatasetService:
    """Create, evolve, read, inspect and maintain datasets (catalog + Delta tables)."""

    def __init__(self, catalog: Catalog, settings: Settings) -> None:
        self._catalog = catalog
        self._settings = settings
        self._handles: dict[str, DeltaDataset] = {}
        self._opened: dict[str, tuple[tuple[object, ...], OpenDataset]] = {}
        self._write_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._spec_listeners: builtins.list[Callable[[str], None]] = []

    def add_spec_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` after this service changes the spec of dataset ``name`` (for caches of specs)."""
        self._spec_listeners.append(listener)

    def create(self, spec: SpecSource, *, principal: Principal, author: str | None = None) -> DatasetInfo:
        """Register a dataset and create its empty Delta table (version 0) and its dead-letter dataset."""
        spec = _user_spec(spec)
        principal.require(spec.team, f"Dataset {spec.name!r}")
        _validate_quality(spec)
        specs = [spec, rejected_spec(spec)]
        with self._catalog.session() as session:
            names = [each.name for each in specs]
            taken = list(session.scalars(select(DatasetRecord.name).where(DatasetRecord.name.in_(names))))
        if taken:
            raise AlreadyExists(f"Dataset {taken[0]!r} exists already. Use apply to change its spec.")
        who = author or principal.name
        for each in specs:
            self._create_table(each, who)
        with self._catalog.session() as session:
            for each in specs:
                session.add(DatasetRecord(name=each.name, team=each.team, description=each.description,
                                          location=self._location(each.name), spec=each.to_dict(),
                                          schema_version=1))
                session.add(SchemaVersion(dataset=each.name, schema_version=1, columns=columns_document(each),
                                          first_delta_version=0, change="created", author=who))
        return self.get(spec.name, principal=principal)

    def apply(
        self, spec: SpecSource, *, principal: Principal, author: str | None = None
    ) -> SchemaChangeResult:
        """Create the dataset, or evolve it to ``spec`` if the change is safe (else SchemaChangeRefused)."""
        spec = _user_spec(spec)
        if self._find(spec.name) is None:
            self.create(spec, principal=principal, author=author)
            return SchemaChangeResult(dataset=spec.name, action="created", schema_version=1, delta_version=0,
                                      message=f"Created dataset {spec.name!r}.")
        with self.write_lock(spec.name):
            opened = self.open(spec.name, principal=principal)
            plan = plan_schema_change(opened.spec, spec)
            _validate_quality(spec)
            if plan.is_noop:
                return SchemaChangeResult(dataset=spec.name, action="unchanged",
                                          schema_version=opened.info.schema_version,
                                          message=f"Dataset {spec.name!r} already matches this spec.")
            return self._evolve(opened, spec, plan, author or principal.name)

    def get(self, name: str, *, principal: Principal) -> DatasetInfo:
        """Facts about one dataset."""
        record = self._record(name, principal)
        return self._info(record, self._handle(record).version())

    def list(self, *, principal: Principal) -> list[DatasetInfo]:
        """Every dataset the caller may see (its team's; all for the administrator), by name."""
        query = select(DatasetRecord).order_by(DatasetRecord.name)
        if not principal.is_admin:
            query = query.where(DatasetRecord.team == principal.team)
        with self._catalog.session() as session:
            records = list(session.scalars(query))
        return [self._info(record, self._handle(record).version()) for record in records]

    def open(self, name: str, *, principal: Principal) -> OpenDataset:
        """The dataset's info, current spec and (cached) Delta handle, for writers and checks.

        Cheap on the hot path: one catalog query; the parsed spec and handle are reused until the catalog
        record changes. ``info.current_version`` is the version the handle last saw (refresh for newer).
        """
        record = self._record(name, principal)
        stamp = (record.location, record.updated_at, record.schema_version)
        with self._lock:
            cached = self._opened.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        handle = self._handle(record)
        opened = OpenDataset(
            self._info(record, handle.version()), DatasetSpec.model_validate(record.spec), handle
        )
        with self._lock:
            self._opened[name] = (stamp, opened)
        return opened

    def read(
        self,
        name: str,
        *,
        principal: Principal,
        version: int | None = None,
        as_of: datetime | None = None,
        columns: builtins.list[str] | None = None,
    ) -> pa.Table:
        """Rows at a version or point in time, in the logical schema in force at that version."""
        opened = self.open(name, principal=principal)
        snapshot = opened.table.snapshot(version, as_of)
        logical = self._timeline(name).entry_at(snapshot.version()).arrow_schema()
        wanted = columns if columns is not None else logical.names
        unknown = [column for column in wanted if column not in logical.names]
        if unknown:
            raise InvalidInput(
                f"Unknown column(s) {unknown} in dataset {name!r} at version {snapshot.version()}; "
                f"valid columns are {logical.names}."
            )
        try:
            stored = snapshot.to_pyarrow_dataset().to_table(columns=wanted)
        except FileNotFoundError as exc:
            raise NotFound(
                f"Version {snapshot.version()} of dataset {name!r} can no longer be read: retention vacuumed "
                f"its files. See `history` for the versions after the last retention run."
            ) from exc
        return to_logical(stored, logical).select(wanted)

    def history(self, name: str, *, principal: Principal) -> builtins.list[DatasetVersion]:
        """Every version, newest first: operation, rows added/removed, schema version and author."""
        opened = self.open(name, principal=principal)
        timeline = self._timeline(name)
        return [commit_to_version(commit, timeline) for commit in opened.table.history()]

    def replace(
        self,
        name: str,
        data: pa.Table | pa.RecordBatchReader,
        *,
        principal: Principal,
        author: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Make ``data`` the whole content of ``name`` as one new version (operation ``replace``); returns it.

        Rows are validated and converted as ingestion does, but all or nothing: one invalid row, or two rows
        with the same dedup key, refuses the whole replace with InvalidInput and writes nothing (there are no
        dead letters, since a replace that dropped rows would silently lose them). An empty table clears the
        dataset. Older versions stay readable by time travel until retention vacuums them. ``metadata`` is
        recorded with the commit and shows in history; recplane's own keys (author, rows_added ...) are refused.
        Rows that ingestion commits while the replace is being written are kept on top of the new content, as
        if they had arrived just after it (appends take no lock, and Delta does not remove files it never read).

        ``data`` may be a RecordBatchReader: its batches are then validated and written as they are read, so memory
        stays bounded by a few batches however many rows there are, and the new version appears only once the last
        batch is written (an invalid row, or an error raised by the reader, writes nothing). A dataset with a dedup
        key reads the stream whole first, since duplicates may lie in different batches.
        """
        if name.endswith(REJECTED_SUFFIX):
            raise InvalidInput(f"{name!r} is a dead-letter dataset, written only by recplane's validation.")
        extras = _commit_extras(metadata)
        self.open(name, principal=principal)  # the team check, before waiting for the lock
        with self.write_lock(name):
            # Under the lock: no schema change, compaction or retention can commit between validation and write.
            opened = self.open(name, principal=principal)
            removed = opened.table.refresh().to_pyarrow_dataset().count_rows()
            own: dict[str, Any] = {
                "operation": "replace",
                "author": author or principal.name,
                "schema_version": opened.info.schema_version,
                "rows_removed": removed,
            }
            if isinstance(data, pa.RecordBatchReader) and not opened.spec.dedup_key:
                # Rows added are counted by Delta itself (num_added_rows), which history reads when this key is absent.
                version = _ValidatedStream(opened.spec, data).overwrite(opened.table, {**extras, **own})
            else:
                rows = _replacement_rows(opened.spec, replacement_table(data))
                version = opened.table.overwrite(rows, metadata={**extras, **own, "rows_added": rows.num_rows})
        with self._lock:
            # The cached OpenDataset still reports the version before the replace.
            self._opened.pop(name, None)
        return version

    def stats(self, name: str, *, principal: Principal, version: int | None = None) -> DatasetStats:
        """Rows, bytes, files and per-column profile at a version (default: the newest)."""
        opened = self.open(name, principal=principal)
        snapshot = opened.table.snapshot(version)
        logical = self._timeline(name).entry_at(snapshot.version()).arrow_schema()
        return dataset_stats(name, snapshot, logical)

    def compact(
        self, name: str, *, principal: Principal, target_size: int | None = None, author: str | None = None
    ) -> MaintenanceResult:
        """Merge small files into large ones as a new version; older versions stay readable."""
        opened = self.open(name, principal=principal)
        with self.write_lock(name):
            return compact_table(name, opened.table, author=author or principal.name, target_size=target_size)

    def enforce_retention(
        self, name: str, *, principal: Principal, now: datetime | None = None, author: str | None = None
    ) -> MaintenanceResult:
        """Delete rows older than the spec's retention and vacuum their files (ends older time travel)."""
        opened = self.open(name, principal=principal)
        period, event_time = opened.spec.retention_period, opened.spec.event_time
        if period is None or event_time is None:
            message = f"Dataset {name!r} has no retention; nothing to do."
            return MaintenanceResult(dataset=name, operation="retention", version=opened.table.version(),
                                     details={"message": message})
        with self.write_lock(name):
            return retain_table(name, opened.table, event_time=event_time, retention=period,
                                author=author or principal.name, now=now)

    def maybe_compact(self, name: str, *, author: str = "recplane") -> MaintenanceResult | None:
        """Compact once the dataset has ``compact_after_files`` fresh small files, in tiers (see
        :func:`~recplane.lake.maintenance.automatic_target`; used by ingestion; no auth)."""
        threshold = self._settings.compact_after_files
        record = self._find(name)
        if threshold == 0 or record is None:
            return None
        table = self._handle(record)
        sizes = pa.table(table.refresh().get_add_actions(flatten=True))["size_bytes"].to_pylist()
        target = automatic_target(sizes, min_files=threshold)
        if target is None:
            return None
        with self.write_lock(name):
            return compact_table(name, table, author=author, target_size=target)

    def write_lock(self, name: str) -> threading.Lock:
        """The in-process lock that serialises commits which rewrite or remove files of ``name``."""
        with self._lock:
            return self._write_locks.setdefault(name, threading.Lock())

    def _evolve(
        self, opened: OpenDataset, spec: DatasetSpec, plan: SchemaPlan, author: str
    ) -> SchemaChangeResult:
        schema_version = opened.info.schema_version + (1 if plan.changes_schema else 0)
        delta_version = self._change_table(opened.table, spec, plan, schema_version, author)
        with self._catalog.session() as session:
            record = session.scalars(select(DatasetRecord).where(DatasetRecord.name == spec.name)).one()
            record.spec, record.description = spec.to_dict(), spec.description
            record.schema_version = schema_version
            if plan.changes_schema:
                session.add(SchemaVersion(dataset=spec.name, schema_version=schema_version,
                                          columns=columns_document(spec), first_delta_version=delta_version,
                                          change=plan.describe(), author=author))
            self._sync_rejected(session, spec)
        for listener in self._spec_listeners:
            listener(spec.name)
        return SchemaChangeResult(
            dataset=spec.name,
            action="evolved",
            schema_version=schema_version,
            added_columns=list(plan.added),
            widened_columns=[
                WidenedColumn.model_validate({"column": w.column, "from": w.old, "to": w.new})
                for w in plan.widened
            ],
            relaxed_columns=list(plan.relaxed),
            metadata_changes=list(plan.metadata_changes),
            delta_version=delta_version if plan.changes_schema else None,
            message=f"Dataset {spec.name!r}: {plan.describe()}.",
        )

    @staticmethod
    def _change_table(table: DeltaDataset, spec: DatasetSpec, plan: SchemaPlan, schema_version: int,
                      author: str) -> int:
        if not plan.changes_schema:
            return table.version()
        metadata = {"schema_version": schema_version, "author": author, "change": plan.describe()}
        if plan.needs_rewrite:
            # A rewrite moves every row but adds or removes none.
            counts = {"rows_added": 0, "rows_removed": 0}
            return table.rewrite(spec.storage_schema(), metadata={**metadata, **counts})
        stored = pa.schema(table.refresh().schema().to_arrow()).names
        # Skip columns a previous, half-finished apply already added to the Delta table.
        missing = [spec.storage_schema().field(name) for name in plan.added if name not in stored]
        return table.add_columns(missing, metadata=metadata) if missing else table.version()

    def _sync_rejected(self, session: Any, spec: DatasetSpec) -> None:
        dead = rejected_spec(spec)
        record = session.scalars(select(DatasetRecord).where(DatasetRecord.name == dead.name)).one_or_none()
        if record is not None:
            record.spec = dead.to_dict()

    def _create_table(self, spec: DatasetSpec, author: str) -> None:
        location = self._location(spec.name)
        if DeltaTable.is_deltatable(location):
            raise AlreadyExists(
                f"A Delta table exists already at {location}, but no dataset {spec.name!r} is registered. "
                f"Move that folder away, or choose another dataset name."
            )
        DeltaDataset.create(location, spec.storage_schema(), partition_by=spec.partition_by,
                            metadata={"schema_version": 1, "author": author})

    def _location(self, name: str) -> str:
        return f"{self._settings.lake_root.rstrip('/')}/{name}"

    def _find(self, name: str) -> DatasetRecord | None:
        with self._catalog.session() as session:
            return session.scalars(select(DatasetRecord).where(DatasetRecord.name == name)).one_or_none()

    def _record(self, name: str, principal: Principal) -> DatasetRecord:
        record = self._find(name)
        if record is None:
            raise NotFound(f"No dataset named {name!r}. List datasets with `recplane datasets list`.")
        principal.require(record.team, f"Dataset {name!r}")
        return record

    def _handle(self, record: DatasetRecord) -> DeltaDataset:
        with self._lock:
            handle = self._handles.get(record.name)
            if handle is None or handle.uri != record.location:
                handle = self._handles[record.name] = DeltaDataset(record.location)
            return handle

    def _timeline(self, name: str) -> SchemaTimeline:
        query = select(SchemaVersion).where(SchemaVersion.dataset == name)
        with self._catalog.session() as session:
            rows = list(session.scalars(query))
        return SchemaTimeline([SchemaEntry(r.schema_version, r.first_delta_version, r.columns) for r in rows])

    def _info(self, record: DatasetRecord, current_version: int) -> DatasetInfo:
        return DatasetInfo(
            name=record.name,
            team=record.team,
            description=record.description,
            location=record.location,
            schema_version=record.schema_version,
            spec=record.spec,
            current_version=current_version,
            created_at=_aware(record.created_at),
            updated_at=_aware(record.updated_at),
        )
