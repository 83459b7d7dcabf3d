"""Validating rows against a dataset's spec: accepted rows in the storage schema, rejected rows with reasons.

Every column is converted for the whole batch at once with Arrow (inference for JSON values, checked casts
for typed columns), so a clean batch costs no Python per row. Only when a column's conversion fails does
validation look closer, and even then it bisects the column with Arrow to find the failing rows instead of
walking them one by one. JSON values that Arrow cannot even infer as one type (``[1, "a"]`` in one column)
are grouped by Python type and each group converted on its own.

Rules (documented in docs/ingestion.md):

* integers accept JSON integers and integral floats (``3.0``) in range; floats accept integers and floats
  (values beyond float32's range are refused); booleans are never numbers and numbers never booleans;
  strings accept only strings (no silent ``1 -> "1"``).
* timestamps accept ISO-8601 text (``2026-01-01T10:00:00Z``, an offset such as ``+02:00``, or no zone,
  which means UTC; a date alone is midnight UTC) and Unix epoch seconds as integers or floats; Arrow
  timestamps of any unit and zone are converted to microseconds UTC (naive ones are UTC).
* dates accept ``YYYY-MM-DD`` text; vectors need exactly N numbers and no nulls; binary accepts bytes, and
  base64 text from JSON.
* text inputs (CSV) carry every value as text, which is parsed into the column's type; lists, maps and
  vectors in CSV cells are JSON text.
* a column the spec does not declare rejects the row (JSON) or refuses the whole input (typed tables and
  files, whose schema is one for all rows), as does a typed column whose type cannot hold the declared one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recplane.errors import InvalidInput
from recplane.ingest.conversion import UTC_MICROS, conform, conform_json, converter, storage_of, type_name
from recplane.ingest.sources import Mode, RowChunk, UnparsedRow, row_json
from recplane.lake.spec import DatasetSpec

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "Mode",
    "Validated",
    "Validator",
    "dead_letters",
]

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("raw", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("batch_id", pa.string()),
        pa.field("source", pa.string()),
    ]
)
@dataclass
class Validated:
    """One validated chunk: accepted rows (storage schema); rejected rows' positions, text and reasons."""

    accepted: pa.Table
    rejected_rows: list[int] = field(default_factory=list)
    rejected_raw: list[str | None] = field(default_factory=list)
    rejected_reasons: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        """How many rows were rejected."""
        return len(self.rejected_rows)


def dead_letters(
    raw: Sequence[str | None], reasons: Sequence[str], *, batch_id: str, source: str, received_at: datetime
) -> pa.Table:
    """The rows to append to ``NAME__rejected`` for rejected rows."""
    count = len(reasons)
    moment = received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC)
    return pa.Table.from_arrays(
        [
            pa.array(raw, pa.string()),
            pa.array(reasons, pa.string()),
            pa.array([moment] * count, UTC_MICROS),
            pa.array([batch_id] * count, pa.string()),
            pa.array([source] * count, pa.string()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


class Validator:
    """Validates rows against one version of a dataset's spec."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.logical = spec.arrow_schema()
        self.storage = spec.storage_schema()
        self._known = set(self.logical.names)
        self._column_list = ", ".join(self.logical.names)
        self._checked_schemas: set[tuple[pa.Schema, str]] = set()


    def validate_rows(self, chunk: RowChunk) -> Validated:
        """Validate JSON-like rows (dicts); rows that are not objects or not JSON are rejected."""
        rows = chunk.rows
        problems: dict[int, list[str]] = {}
        replaced: set[int] = set()
        if not all(issubclass(kind, dict) for kind in set(map(type, rows))):
            rows, replaced = self._objects_only(rows, problems)
        unknown = set().union(*rows) - self._known if rows else set()
        if unknown:
            self._unknown_keys(rows, problems)
        columns = []
        for target in self.logical:
            values = list(map(dict.get, rows, itertools.repeat(target.name)))
            array, bad = conform_json(values, target.type)
            for index, reason in bad.items():
                problems.setdefault(index, []).append(f"column {target.name!r}: {reason}")
            if not target.nullable:
                self._required(rows, target.name, array, problems, replaced)
            columns.append(array)
        return self._finish(columns, problems, lambda i: chunk.raw_text(i), chunk.offset)

    def _objects_only(self, rows: list[Any], problems: dict[int, list[str]]) -> tuple[list[Any], set[int]]:
        cleaned, replaced = [], set()
        for index, row in enumerate(rows):
            if isinstance(row, dict):
                cleaned.append(row)
                continue
            if isinstance(row, UnparsedRow):
                problems[index] = [row.reason]
            else:
                problems[index] = [f"row is not a JSON object (got {_json_kind(row)})"]
            cleaned.append({})
            replaced.add(index)
        return cleaned, replaced

    def _unknown_keys(self, rows: list[dict[str, Any]], problems: dict[int, list[str]]) -> None:
        for index, row in enumerate(rows):
            extra = [key for key in row if key not in self._known]
            for key in extra:
                problems.setdefault(index, []).append(f"unknown column {key!r} (columns are {self._column_list})")

    def _required(
        self,
        rows: list[dict[str, Any]],
        name: str,
        array: pa.Array,
        problems: dict[int, list[str]],
        skip: set[int],
    ) -> None:
        if array.null_count == 0:
            return
        for index in np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)):
            position = int(index)
            if position in skip or any(p.startswith(f"column {name!r}:") for p in problems.get(position, [])):
                continue
            if name in rows[position]:
                problems.setdefault(position, []).append(f"column {name!r} is null but not nullable")
            else:
                problems.setdefault(position, []).append(f"missing required column {name!r}")


    def validate_batch(self, batch: pa.RecordBatch | pa.Table, *, mode: Mode = "arrow", offset: int = 0) -> Validated:
        """Validate a typed batch (Arrow, Parquet, pandas; ``mode="text"`` for CSV text columns)."""
        self._check_schema(batch.schema, mode)
        problems: dict[int, list[str]] = {}
        columns = []
        for target in self.logical:
            if target.name not in batch.schema.names:
                columns.append(pa.nulls(batch.num_rows, storage_of(target.type)))
                continue
            source = batch.column(target.name)
            if isinstance(source, pa.ChunkedArray):
                source = source.combine_chunks() if source.num_chunks != 1 else source.chunk(0)
            if mode == "text" and not pa.types.is_string(target.type) and pa.types.is_string(source.type):
                source = pc.if_else(pc.equal(source, ""), pa.scalar(None, pa.string()), source)
            array, bad = conform(source, target.type, mode)
            for index, reason in bad.items():
                problems.setdefault(index, []).append(f"column {target.name!r}: {reason}")
            if not target.nullable and array.null_count:
                for position in np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)).tolist():
                    if position not in bad:
                        problems.setdefault(position, []).append(f"column {target.name!r} is null but not nullable")
            columns.append(array)

        def raw(index: int) -> str:
            return row_json(batch.slice(index, 1).to_pylist()[0])

        return self._finish(columns, problems, raw, offset)

    def _check_schema(self, schema: pa.Schema, mode: Mode) -> None:
        """Refuse typed inputs whose schema can never fit (their rows all share one schema)."""
        if (schema, mode) in self._checked_schemas:
            return
        unknown = [name for name in schema.names if name not in self._known]
        if unknown:
            raise InvalidInput(
                f"Unknown column(s) {unknown} in the input; dataset {self.spec.name!r} has columns "
                f"{self._column_list}. Drop or rename them, or add them to the spec first."
            )
        missing = [f.name for f in self.logical if not f.nullable and f.name not in schema.names]
        if missing:
            raise InvalidInput(f"Missing required column(s) {missing} in the input for dataset {self.spec.name!r}.")
        for target in self.logical:
            if target.name not in schema.names:
                continue
            source = schema.field(target.name).type
            if not _can_hold(source, target.type, mode):
                raise InvalidInput(
                    f"Column {target.name!r} has type {source} in the input, which cannot hold "
                    f"{type_name(target.type)}. Convert the column before ingesting it."
                )
        self._checked_schemas.add((schema, mode))


    def _finish(
        self,
        columns: list[pa.Array],
        problems: dict[int, list[str]],
        raw: Callable[[int], str | None],
        offset: int,
    ) -> Validated:
        table = pa.Table.from_arrays(columns, schema=self.storage)
        if not problems:
            return Validated(table)
        bad = sorted(problems)
        keep = np.ones(table.num_rows, dtype=bool)
        keep[bad] = False
        return Validated(
            accepted=table.filter(pa.array(keep)),
            rejected_rows=[offset + i for i in bad],
            rejected_raw=[raw(i) for i in bad],
            rejected_reasons=["; ".join(problems[i]) for i in bad],
        )


def _json_kind(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


def _can_hold(source: pa.DataType, target: pa.DataType, mode: Mode) -> bool:
    """Whether a typed column of ``source`` may hold values of ``target`` (bad values aside)."""
    if pa.types.is_dictionary(source):
        source = source.value_type
    if pa.types.is_null(source) or source == storage_of(target):
        return True
    if pa.types.is_large_string(source) or pa.types.is_string_view(source):
        source = pa.string()
    if mode == "text" and pa.types.is_string(source):
        return True
    if pa.types.is_map(target):
        return (
            pa.types.is_map(source)
            and _can_hold(source.key_type, target.key_type, mode)
            and _can_hold(source.item_type, target.item_type, mode)
        )
    if pa.types.is_list(target) or pa.types.is_fixed_size_list(target):
        listish = (
            pa.types.is_list(source)
            or pa.types.is_large_list(source)
            or pa.types.is_fixed_size_list(source)
            or pa.types.is_list_view(source)
        )
        return listish and _can_hold(source.value_type, target.value_type, mode)
    normalised = pa.binary() if pa.types.is_large_binary(source) else source
    return converter(normalised, target, mode) is not None
