"""Shared, backend-free steps of the online store: turning input rows into a write batch, checking read
requests, and assembling an :class:`OnlineResult` with each entity's status.

Writes arrive columnar (an Arrow table from materialisation) or as a few dict rows (streaming updates); both
become one :class:`WriteBatch` of encoded keys, event/created times in microseconds and one Python list per
feature, so each backend only decides how to store it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recplane.errors import InvalidInput, NotFound
from recplane.features.online.codec import (
    encode_key,
    encode_scalar_keys,
    encode_vector_rows,
    from_micros,
    to_micros,
)
from recplane.features.online.protocol import EntityKey, EntityStatus, OnlineResult, OnlineRow

__all__ = [
    "WriteBatch",
    "assemble_result",
    "prepare_write",
    "requested_features",
    "unknown_features",
    "unknown_view",
]

Hit = tuple[int, Sequence[Any]] | None
"""A backend's answer for one key: (event time in µs, values in requested-feature order), or None."""


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Rows ready for a backend: encoded keys, times in µs since the epoch, one value list per feature."""

    features: tuple[str, ...]
    keys: list[bytes]
    event_micros: list[int]
    created_micros: list[int]
    columns: list[list[Any]]

    def __len__(self) -> int:
        return len(self.keys)

    def in_key_order(self) -> WriteBatch:
        """The same rows ordered by key bytes (B-tree stores insert them in far fewer page visits)."""
        keys = self.keys
        if keys == sorted(keys):  # Timsort only scans input that is in order already
            return self
        order = sorted(range(len(keys)), key=keys.__getitem__)
        return WriteBatch(
            self.features,
            [keys[i] for i in order],
            [self.event_micros[i] for i in order],
            [self.created_micros[i] for i in order],
            [[column[i] for i in order] for column in self.columns],
        )

    def slice(self, start: int, stop: int) -> WriteBatch:
        """Rows ``start:stop`` (backends write big batches in bounded chunks)."""
        return WriteBatch(
            self.features,
            self.keys[start:stop],
            self.event_micros[start:stop],
            self.created_micros[start:stop],
            [column[start:stop] for column in self.columns],
        )


def prepare_write(
    rows: pa.Table | pa.RecordBatch | Sequence[OnlineRow],
    *,
    key_columns: Sequence[str],
    feature_columns: Sequence[str],
    event_time_column: str,
    created_time_column: str | None,
) -> WriteBatch:
    """Validate the column roles and turn ``rows`` into a :class:`WriteBatch`."""
    _check_roles(key_columns, feature_columns, event_time_column, created_time_column)
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    if isinstance(rows, pa.Table):
        return _from_table(rows, list(key_columns), list(feature_columns), event_time_column, created_time_column)
    return _from_rows(rows, list(key_columns), list(feature_columns), event_time_column, created_time_column)


def _check_roles(
    key_columns: Sequence[str], feature_columns: Sequence[str], event_column: str, created_column: str | None
) -> None:
    if isinstance(key_columns, str) or isinstance(feature_columns, str):
        raise InvalidInput("key_columns and feature_columns must be lists of column names, not a single string.")
    if not key_columns:
        raise InvalidInput("Name at least one key column (key_columns) for an online write.")
    if not feature_columns:
        raise InvalidInput("Name at least one feature column (feature_columns) for an online write.")
    roles = [*key_columns, *feature_columns, event_column, *([created_column] if created_column else [])]
    repeated = sorted({name for name in roles if roles.count(name) > 1})
    if repeated:
        raise InvalidInput(f"Column(s) {', '.join(map(repr, repeated))} given more than one role in an online write.")


def _from_table(
    table: pa.Table, key_columns: list[str], features: list[str], event_column: str, created_column: str | None
) -> WriteBatch:
    needed = [*key_columns, *features, event_column, *([created_column] if created_column else [])]
    missing = [name for name in needed if name not in table.column_names]
    if missing:
        raise InvalidInput(
            f"Column(s) {', '.join(map(repr, missing))} not in the rows to write; they have: "
            f"{', '.join(table.column_names)}."
        )
    for name in [*key_columns, event_column]:
        if table[name].null_count:
            raise InvalidInput(
                f"Column {name!r} has {table[name].null_count} null value(s); keys and event times cannot be null."
            )
    keys = _table_keys(table, key_columns)
    n = table.num_rows
    created = _micros_column(table[created_column], created_column) if created_column else [0] * n
    return WriteBatch(
        tuple(features),
        keys,
        _micros_column(table[event_column], event_column),
        created,
        [_feature_values(table[name]) for name in features],
    )


def _table_keys(table: pa.Table, key_columns: list[str]) -> list[bytes]:
    key_lists = [table[name].to_pylist() for name in key_columns]
    if len(key_columns) == 1:
        key_type = table[key_columns[0]].type
        if pa.types.is_integer(key_type) or pa.types.is_string(key_type) or pa.types.is_large_string(key_type):
            return encode_scalar_keys(key_lists[0])
        return [encode_key(key) for key in key_lists[0]]
    return [encode_key(key) for key in zip(*key_lists, strict=True)]


def _micros_column(column: pa.ChunkedArray, name: str) -> list[int]:
    """µs since the epoch of a timestamp column (naive = UTC); nulls become 0, the earliest time."""
    if not pa.types.is_timestamp(column.type):
        raise InvalidInput(f"Column {name!r} must hold timestamps to order online rows, not {column.type}.")
    micros = pc.cast(column, pa.timestamp("us", tz=column.type.tz), safe=False).cast(pa.int64())
    return micros.fill_null(0).to_pylist()


def _is_vector(data_type: pa.DataType) -> bool:
    if pa.types.is_fixed_size_list(data_type):
        return pa.types.is_floating(data_type.value_type) or pa.types.is_integer(data_type.value_type)
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return pa.types.is_float32(data_type.value_type)
    return False


def _feature_values(column: pa.ChunkedArray) -> list[Any]:
    """Python values of a feature column; float32 lists and fixed-size lists become NumPy vectors."""
    data_type = column.type
    if pa.types.is_timestamp(data_type) and data_type.tz is None:
        column = column.cast(pa.timestamp(data_type.unit, "UTC"))
    if not _is_vector(data_type):
        return column.to_pylist()
    return _vectors(column.combine_chunks())


def _vectors(array: pa.Array) -> list[Any]:
    """Vectors of a list column; fixed-size lists go straight to ready-to-pack bytes (the bulk path)."""
    flat = array.values.to_numpy(zero_copy_only=False)
    vectors: list[Any]
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        start = array.offset * size
        vectors = encode_vector_rows(flat[start : start + len(array) * size].reshape(len(array), size))
    else:
        offsets = array.offsets.to_numpy()
        vectors = [flat[offsets[i] : offsets[i + 1]] for i in range(len(array))]
    if array.null_count:
        for index in np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)):
            vectors[index] = None
    return vectors


def _from_rows(
    rows: Sequence[OnlineRow],
    key_columns: list[str],
    features: list[str],
    event_column: str,
    created_column: str | None,
) -> WriteBatch:
    keys: list[bytes] = []
    events: list[int] = []
    created: list[int] = []
    columns: list[list[Any]] = [[] for _ in features]
    for index, row in enumerate(rows):
        _check_row(row, index, [*key_columns, *features, event_column])
        parts = tuple(row[name] for name in key_columns)
        keys.append(encode_key(parts))
        events.append(_row_micros(row[event_column], event_column, index))
        created_at = row.get(created_column) if created_column else None
        created.append(0 if created_at is None else _row_micros(created_at, str(created_column), index))
        for column, name in zip(columns, features, strict=True):
            column.append(row[name])
    return WriteBatch(tuple(features), keys, events, created, columns)


def _check_row(row: OnlineRow, index: int, needed: list[str]) -> None:
    if not isinstance(row, Mapping):
        raise InvalidInput(f"Row {index} is a {type(row).__name__}; online rows are Arrow tables or dicts.")
    missing = [name for name in needed if name not in row]
    if missing:
        raise InvalidInput(f"Row {index} lacks column(s) {', '.join(map(repr, missing))}.")


def _row_micros(value: Any, name: str, index: int) -> int:
    if not isinstance(value, datetime):
        raise InvalidInput(f"Row {index}: {name!r} must be a datetime, got {type(value).__name__} {value!r}.")
    return to_micros(value)


def requested_features(features: Sequence[str]) -> tuple[str, ...]:
    """The asked-for feature names, de-duplicated in order; at least one."""
    if isinstance(features, str):
        features = [features]
    wanted = tuple(dict.fromkeys(features))
    if not wanted:
        raise InvalidInput("Name at least one feature to read.")
    return wanted


def unknown_features(view: str, unknown: Sequence[str], known: Sequence[str]) -> InvalidInput:
    """The error for features the view was never written with."""
    return InvalidInput(
        f"Feature(s) {', '.join(map(repr, unknown))} not in online view {view!r}; it has: "
        f"{', '.join(sorted(known))}. Check the name, or materialize the view with that feature.",
        details={"view": view, "unknown_features": list(unknown)},
    )


def unknown_view(view: str) -> NotFound:
    """The error for a view that has never been written to the online store."""
    return NotFound(f"Online view {view!r} has never been written; materialize it first.", details={"view": view})


def assemble_result(
    view: str,
    keys: Sequence[EntityKey],
    features: tuple[str, ...],
    hits: Sequence[Hit],
    *,
    ttl: timedelta | None,
    now: datetime | None,
) -> OnlineResult:
    """Statuses, event times and columnar values; an expired row keeps its event time but not its values."""
    cutoff = _cutoff_micros(ttl, now)
    nulls = (None,) * len(features)
    rows: list[Sequence[Any]] = []
    statuses: list[EntityStatus] = []
    event_times: list[datetime | None] = []
    for hit in hits:
        if hit is None:
            statuses.append("missing")
            event_times.append(None)
            rows.append(nulls)
            continue
        event_micros, values = hit
        event_times.append(from_micros(event_micros))
        expired = cutoff is not None and event_micros < cutoff
        statuses.append("expired" if expired else "ok")
        rows.append(nulls if expired else values)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in features]
    values_by_feature = {name: list(column) for name, column in zip(features, columns, strict=True)}
    return OnlineResult(view, features, list(keys), values_by_feature, event_times, statuses)


def _cutoff_micros(ttl: timedelta | None, now: datetime | None) -> int | None:
    """Rows with an event time before this are expired (age > ttl); None when nothing expires."""
    if ttl is None:
        return None
    if ttl < timedelta(0):
        raise InvalidInput(f"ttl must not be negative, got {ttl}.")
    reference = now if now is not None else datetime.now(UTC)
    return to_micros(reference) - (ttl // timedelta(microseconds=1))
