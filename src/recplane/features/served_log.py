"""The served-feature log: what each online lookup answered, appended to a dataset for skew reports.

A lookup made with ``log=True`` (or with the ``log_served_features`` setting on) hands a snapshot of its answer
to :class:`ServedFeatureLog` and returns at once: the lookup path only copies references and takes a lock. A
background thread expands the snapshots into rows — one per (entity, feature) — and appends them through the
ingestion service every ``feature_log_flush_ms`` (validated, group-committed, durable once ``ingest`` returns).
So a served value reaches the lake within about one flush interval; :meth:`ServedFeatureLog.flush` commits
everything logged so far (skew reports call it first) and :meth:`ServedFeatureLog.close` does it on shutdown.
A crash loses at most the rows of the last interval — the price of not waiting for a commit on every lookup.

The log is an ordinary dataset (default ``feature_log``), created on first use with :data:`LOG_COLUMNS` and
``served_at`` as its event time, owned by the first caller's team; later callers must belong to that team (or
name their own dataset). Values are stored as JSON text — vectors as lists, times as ISO 8601 in UTC — written
by :func:`value_json`, the same encoder skew reports apply to offline values so both sides compare alike.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from recplane.auth import ADMIN, Principal
from recplane.errors import AlreadyExists, InvalidInput, NotFound
from recplane.features.online.protocol import EntityStatus
from recplane.ingest import IngestService
from recplane.lake import DatasetService
from recplane.lake.spec import DatasetSpec

__all__ = [
    "DEFAULT_LOG_DATASET",
    "LOG_COLUMNS",
    "ServedFeatureLog",
    "ServedLookup",
    "entity_json",
    "log_spec",
    "served_rows",
    "value_json",
]

log = logging.getLogger(__name__)

DEFAULT_LOG_DATASET = "feature_log"
LOG_COLUMNS: dict[str, str] = {
    "request_id": "string",
    "served_at": "timestamp",
    "entity": "string",
    "feature": "string",
    "value": "string",
    "value_event_time": "timestamp",
    "status": "string",
}
"""Column types of a served-feature log (``entity``: JSON of the join keys; ``value``: JSON of the value)."""
# Times go through _fallback (passthrough) so that every time is written in UTC, whatever its zone.
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def log_spec(name: str, team: str) -> DatasetSpec:
    """The dataset spec of a served-feature log."""
    return DatasetSpec(
        name=name,
        team=team,
        description="Feature values served by online lookups (one row per entity and feature), for skew reports.",
        columns=dict(LOG_COLUMNS),
        event_time="served_at",
    )


_LOG_SCHEMA = log_spec(DEFAULT_LOG_DATASET, "default").arrow_schema()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXPAND_SLICE = 16
_MICROSECOND = timedelta(microseconds=1)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _fallback(value: Any) -> Any:
    """What orjson cannot (or, for times, must not) write itself: times in UTC, bytes as base64."""
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return str(value)


def value_json(value: Any) -> str:
    """A feature value as JSON text: NumPy vectors as lists, times as UTC ISO 8601, bytes as base64."""
    return orjson.dumps(value, default=_fallback, option=_JSON_OPTIONS).decode()


def entity_json(entity: Mapping[str, Any]) -> str:
    """An entity's join key values as JSON text with sorted keys (equal entities give equal text)."""
    return value_json(dict(entity))


@dataclass(frozen=True)
class ServedLookup:
    """A snapshot of one lookup's answer, taken on the serving path and expanded into rows later."""

    request_id: str
    served_at: datetime
    entities: list[dict[str, Any]]
    features: list[tuple[str, str, str]]
    """Per output column: (output name, ``view:feature`` reference, online view it was read from)."""
    values: dict[str, list[Any]]
    view_statuses: dict[str, list[EntityStatus]]
    event_times: dict[str, list[datetime | None]]

    @property
    def row_count(self) -> int:
        """Log rows this lookup becomes."""
        return len(self.entities) * len(self.features)


def _micros(moment: datetime | None) -> int | None:
    # Arrow converts tz-aware datetime objects slowly (a Python call each); integers it takes at C speed.
    if moment is None:
        return None
    return ((moment if moment.tzinfo else moment.replace(tzinfo=UTC)) - _EPOCH) // _MICROSECOND


def served_rows(lookups: Sequence[ServedLookup]) -> pa.Table:
    """The log rows of some lookups, one per (entity, feature), in the log's schema."""
    columns: dict[str, list[Any]] = {name: [] for name in LOG_COLUMNS}
    for lookup in lookups:
        entities = [entity_json(entity) for entity in lookup.entities]
        count = len(entities)
        served_at = _micros(lookup.served_at)
        event_times = {view: [_micros(moment) for moment in times] for view, times in lookup.event_times.items()}
        for output, ref, online_view in lookup.features:
            columns["request_id"] += [lookup.request_id] * count
            columns["served_at"] += [served_at] * count
            columns["entity"] += entities
            columns["feature"] += [ref] * count
            columns["value"] += [value_json(value) for value in lookup.values[output]]
            columns["value_event_time"] += event_times[online_view]
            columns["status"] += lookup.view_statuses[online_view]
    arrays = [
        pa.array(columns[field.name], pa.int64()).cast(field.type)
        if pa.types.is_timestamp(field.type)
        else pa.array(columns[field.name], field.type)
        for field in _LOG_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=_LOG_SCHEMA)


def _expanded(lookups: list[ServedLookup]) -> pa.Table:
    """:func:`served_rows` in slices, handing the GIL to serving threads between them (the lookups waiting
    behind this thread would otherwise wait for Python's 5 ms switch interval)."""
    tables = []
    for start in range(0, len(lookups), _EXPAND_SLICE):
        tables.append(served_rows(lookups[start : start + _EXPAND_SLICE]))
        time.sleep(0)
    return pa.concat_tables(tables)


class ServedFeatureLog:
    """Buffers served lookups and appends them to their log datasets on a background thread."""

    def __init__(
        self,
        datasets: DatasetService,
        ingestion: IngestService,
        *,
        flush_seconds: float = 0.5,
        max_pending_rows: int = 1_000_000,
    ) -> None:
        self._datasets = datasets
        self._ingestion = ingestion
        self._flush_seconds = flush_seconds
        self._max_pending_rows = max_pending_rows
        self._teams: dict[str, str] = {}
        self._pending: dict[str, list[ServedLookup]] = {}
        self._pending_rows = 0
        self._failed: list[tuple[str, str, pa.Table]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped_rows = 0
        """Rows given up because the buffer was full while ingestion kept failing (logged as errors)."""

    def prepare(self, dataset: str, principal: Principal) -> None:
        """Make sure ``dataset`` is a served-feature log the caller may write (created on first use)."""
        team = self._teams.get(dataset)
        if team is None:
            team = self._teams[dataset] = self._open_or_create(dataset, principal)
        principal.require(team, f"Served-feature log {dataset!r}")

    def append(self, dataset: str, lookup: ServedLookup) -> None:
        """Queue one lookup for ``dataset`` (call :meth:`prepare` first); never waits for a commit."""
        with self._lock:
            if self._stop.is_set():
                return
            if self._pending_rows + lookup.row_count > self._max_pending_rows:
                self.dropped_rows += lookup.row_count
                log.error("Served-feature log buffer is full; dropped %d rows for %s", lookup.row_count, dataset)
                return
            self._pending.setdefault(dataset, []).append(lookup)
            self._pending_rows += lookup.row_count
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="recplane-feature-log", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Commit every lookup queued so far (blocks until ingestion has made them durable)."""
        with self._flush_lock:
            failed, self._failed = self._failed, []
            for dataset, batch_id, table in failed:  # older batches first, under their own ids (idempotent)
                self._commit(dataset, batch_id, table)
            with self._lock:
                pending, self._pending, self._pending_rows = self._pending, {}, 0
            for dataset, lookups in pending.items():
                self._commit(dataset, f"served-{uuid.uuid4().hex}", _expanded(lookups))

    def close(self) -> None:
        """Stop the background thread and commit what is left."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            try:
                self.flush()
            except Exception:  # keep the thread alive whatever happens; failed batches are retried
                log.exception("Flushing the served-feature log failed")

    def _commit(self, dataset: str, batch_id: str, table: pa.Table) -> None:
        try:
            self._ingestion.ingest(dataset, table, principal=ADMIN, batch_id=batch_id, source="feature-log")
        except Exception:
            log.exception("Appending %d served-feature rows to %s failed; retrying later", table.num_rows, dataset)
            self._keep_for_retry(dataset, batch_id, table)

    def _keep_for_retry(self, dataset: str, batch_id: str, table: pa.Table) -> None:
        self._failed.append((dataset, batch_id, table))
        while sum(each[2].num_rows for each in self._failed) > self._max_pending_rows:
            _, _, dropped = self._failed.pop(0)  # ingestion has failed for long: give up the oldest rows
            with self._lock:
                self.dropped_rows += dropped.num_rows
            log.error("Served-feature log: gave up %d rows after repeated ingestion failures", dropped.num_rows)

    def _open_or_create(self, dataset: str, principal: Principal) -> str:
        try:
            opened = self._datasets.open(dataset, principal=ADMIN)
        except NotFound:
            team = principal.team or "default"
            with contextlib.suppress(AlreadyExists):  # another process or thread created it first
                self._datasets.create(log_spec(dataset, team), principal=principal, author="recplane feature log")
            opened = self._datasets.open(dataset, principal=ADMIN)
        _check_log_columns(dataset, {name: column.type for name, column in opened.spec.columns.items()})
        return opened.spec.team


def _check_log_columns(dataset: str, columns: Mapping[str, str]) -> None:
    wrong = {name: kind for name, kind in LOG_COLUMNS.items() if columns.get(name) != kind}
    if wrong:
        raise InvalidInput(
            f"Dataset {dataset!r} exists but is not a served-feature log: it needs columns {wrong}. "
            "Log to another dataset (log_dataset=... or the feature_log_dataset setting).",
            details={"dataset": dataset, "needs": wrong},
        )
