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

import binascii
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from recplane.errors import InvalidInput
from recplane.ingest.sources import Mode, RowChunk, UnparsedRow, row_json
from recplane.lake.spec import DatasetSpec, type_string

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
UTC_MICROS = pa.timestamp("us", tz="UTC")
_CONVERSION_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError, binascii.Error)
_SHOW_LIMIT = 80
Convert = Callable[[Any], pa.Array]


class _Incompatible(Exception):
    """A value's type can never become the column's type (no per-value check needed)."""


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


def _show(value: Any) -> str:
    """A value as it appears in a reason: strings quoted, the rest as JSON."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        except TypeError:
            text = repr(value)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 1] + "…"


def _type_name(target: pa.DataType) -> str:
    try:
        return type_string(target)
    except Exception:
        return str(target)


def _value_reason(value: Any, target: pa.DataType) -> str:
    if pa.types.is_timestamp(target):
        return f"value {_show(value)} is not a timestamp (ISO-8601 text or Unix epoch seconds)"
    if pa.types.is_date(target):
        return f"value {_show(value)} is not a date (YYYY-MM-DD)"
    if pa.types.is_binary(target) and isinstance(value, str):
        return f"value {_show(value)} is not base64 text (binary columns take base64 in JSON)"
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if numeric and (pa.types.is_floating(target) or (pa.types.is_integer(target) and whole)):
        return f"value {_show(value)} is out of range for {_type_name(target)}"
    return f"value {_show(value)} is not {_type_name(target)}"


# ---------------------------------------------------------------------------------------------------------
# Converting one Arrow array to a target type
# ---------------------------------------------------------------------------------------------------------


def _normalised(array: pa.Array) -> pa.Array:
    """Decode dictionaries and use the plain (32-bit offset) string, binary and list types."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _normalised(array.dictionary_decode())
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return array.cast(pa.string())
    if pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind) or pa.types.is_fixed_size_binary(kind):
        return array.cast(pa.binary())
    if pa.types.is_large_list(kind) or pa.types.is_list_view(kind) or pa.types.is_large_list_view(kind):
        return array.cast(pa.list_(kind.value_field))
    return array


def _float_checked(target: pa.DataType) -> Convert:
    def convert(array: pa.Array) -> pa.Array:
        out = array.cast(target, safe=False)
        if pa.types.is_floating(array.type):
            overflow = pc.and_(pc.is_inf(out), pc.invert(pc.is_inf(array)))
            if pc.any(overflow).as_py():
                raise pa.ArrowInvalid(f"value beyond {target} range")
        return out

    return convert


_EPOCH_RANGE = (-62_135_596_800, 253_402_300_799)  # years 1 to 9999


def _epoch_seconds(array: pa.Array) -> pa.Array:
    # Out-of-range seconds are usually milli- or microseconds sent by mistake: refuse them.
    low, high = pc.min_max(array).values()
    if (low.is_valid and low.as_py() < _EPOCH_RANGE[0]) or (high.is_valid and high.as_py() > _EPOCH_RANGE[1]):
        raise pa.ArrowInvalid("epoch seconds out of range")
    if pa.types.is_integer(array.type):
        micros = pc.multiply_checked(array.cast(pa.int64()), 1_000_000)
    else:
        scaled = pc.multiply_checked(array.cast(pa.float64()), 1_000_000.0)
        micros = pc.round(scaled).cast(pa.int64())
    return micros.cast(UTC_MICROS)


def _iso_timestamp(array: pa.Array) -> pa.Array:
    try:
        return array.cast(UTC_MICROS)
    except pa.ArrowInvalid:
        # No zone offset: the text is UTC.
        return array.cast(pa.timestamp("us")).cast(UTC_MICROS)


def _text_timestamp(array: pa.Array) -> pa.Array:
    try:
        return _iso_timestamp(array)
    except pa.ArrowInvalid:
        return _epoch_seconds(array.cast(pa.float64()))


def _base64(array: pa.Array) -> pa.Array:
    decode = binascii.a2b_base64
    values = [None if text is None else decode(text, strict_mode=True) for text in array.to_pylist()]
    return pa.array(values, pa.binary())


def _converter(source: pa.DataType, target: pa.DataType, mode: Mode) -> Convert | None:
    """How to turn an array of ``source`` into ``target`` (raising on bad values), or None if it never can."""
    text = pa.types.is_string(source)
    if pa.types.is_integer(target):
        if pa.types.is_integer(source) or pa.types.is_floating(source) or (text and mode == "text"):
            return lambda array: array.cast(target)
        return None
    if pa.types.is_floating(target):
        if pa.types.is_integer(source) or pa.types.is_floating(source):
            return _float_checked(target)
        if text and mode == "text":
            return lambda array: _float_checked(target)(array.cast(pa.float64()))
        return None
    if pa.types.is_boolean(target):
        if pa.types.is_boolean(source) or (text and mode == "text"):
            return lambda array: array.cast(target)
        return None
    if pa.types.is_string(target):
        return (lambda array: array) if text else None
    if pa.types.is_binary(target):
        if pa.types.is_binary(source):
            return lambda array: array
        if text:
            return (lambda array: array.cast(pa.binary())) if mode == "arrow" else _base64
        return None
    if pa.types.is_date(target):
        if pa.types.is_date(source) or text:
            return lambda array: array.cast(target)
        return None
    if pa.types.is_timestamp(target):
        return _timestamp_converter(source, target, mode)
    return None


def _timestamp_converter(source: pa.DataType, target: pa.DataType, mode: Mode) -> Convert | None:
    if pa.types.is_timestamp(source):
        # A naive timestamp is UTC: relabelling it keeps its wall-clock value.
        def relabel(array: pa.Array) -> pa.Array:
            aware = array.cast(pa.timestamp(source.unit, tz="UTC")) if source.tz is None else array
            return aware.cast(target, safe=False)

        return relabel
    if pa.types.is_date(source):
        return lambda array: array.cast(target)
    if pa.types.is_string(source):
        return _text_timestamp if mode == "text" else _iso_timestamp
    if pa.types.is_integer(source) or pa.types.is_floating(source):
        return _epoch_seconds
    return None


def _bisect(values: Any, convert: Convert, out_type: pa.DataType) -> tuple[pa.Array, list[int]]:
    """Convert ``values`` (an Arrow array or a list); failing single values become nulls and are reported."""
    pieces: list[pa.Array] = []
    failed: list[int] = []

    def visit(start: int, stop: int) -> None:
        try:
            pieces.append(convert(values[start:stop]))
            return
        except _CONVERSION_ERRORS:
            pass
        if stop - start == 1:
            pieces.append(pa.nulls(1, out_type))
            failed.append(start)
            return
        middle = (start + stop) // 2
        visit(start, middle)
        visit(middle, stop)

    if len(values):
        visit(0, len(values))
    else:
        pieces.append(pa.array([], out_type))
    merged = pieces[0] if len(pieces) == 1 else pa.concat_arrays([p.cast(out_type) for p in pieces])
    return merged, failed


def _storage_of(target: pa.DataType) -> pa.DataType:
    return pa.list_(target.value_type) if pa.types.is_fixed_size_list(target) else target


def _offsets(array: pa.Array) -> pa.Array:
    lengths = pc.list_value_length(array).fill_null(0)
    return pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths).cast(pa.int32())])


def _nested(array: pa.Array, target: pa.DataType, mode: Mode) -> tuple[pa.Array, dict[int, str]]:
    """Lists, vectors and maps: convert the flattened children, then blame their parent rows."""
    if pa.types.is_map(target):
        if not pa.types.is_map(array.type):
            raise _Incompatible
        flat = pc.list_flatten(array)
        keys, key_bad = _conform(flat.field(0), target.key_type, mode)
        items, item_bad = _conform(flat.field(1), target.item_type, mode)
        parents = pc.list_parent_indices(array).to_numpy()
        bad = {int(parents[i]): f"map key: {reason}" for i, reason in key_bad.items()}
        bad.update({int(parents[i]): f"map value: {reason}" for i, reason in item_bad.items()})
        out = pa.MapArray.from_arrays(_offsets(array), keys, items, type=target, mask=array.is_null())
        return out, bad
    if not (pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type)):
        raise _Incompatible
    flat = pc.list_flatten(array)
    values, child_bad = _conform_children(flat, target.value_type, mode)
    parents = pc.list_parent_indices(array).to_numpy()
    bad = {int(parents[i]): f"element {_show(flat[i].as_py())}: {reason}" for i, reason in child_bad.items()}
    if pa.types.is_fixed_size_list(target):
        bad = _vector_checks(array, target, flat, parents, bad)
    out_type = pa.list_(target.value_type) if pa.types.is_fixed_size_list(target) else target
    out = pa.ListArray.from_arrays(_offsets(array), values, type=out_type, mask=array.is_null())
    return out, bad


def _conform_children(flat: pa.Array, target: pa.DataType, mode: Mode) -> tuple[pa.Array, dict[int, str]]:
    try:
        return _conform(flat, target, mode)
    except _Incompatible:
        if mode != "json":
            raise
        # Elements of the wrong type blame their rows; empty lists and null elements stay valid.
        wrong = np.flatnonzero(flat.is_valid().to_numpy(zero_copy_only=False)).tolist()
        return pa.nulls(len(flat), _storage_of(target)), {i: _value_reason(flat[i].as_py(), target) for i in wrong}


def _vector_checks(
    array: pa.Array, target: pa.DataType, flat: pa.Array, parents: np.ndarray, bad: dict[int, str]
) -> dict[int, str]:
    size = target.list_size
    lengths = pc.list_value_length(array)
    wrong = pc.and_(pc.not_equal(lengths, size), array.is_valid())
    checked = {i: "vector contains null values" for i in parents[flat.is_null().to_numpy(zero_copy_only=False)]}
    checked.update(bad)
    lengths_np = lengths.to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(wrong.to_numpy(zero_copy_only=False)):
        checked[int(i)] = f"vector has {int(lengths_np[i])} values, expected {size}"
    return {int(i): reason for i, reason in checked.items()}


def _conform(array: pa.Array, target: pa.DataType, mode: Mode) -> tuple[pa.Array, dict[int, str]]:
    """Convert one typed array to ``target`` (storage form); bad rows become nulls with a reason."""
    array = _normalised(array)
    out_type = _storage_of(target)
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), out_type), {}
    if array.type == out_type and not pa.types.is_nested(out_type):
        return array, {}
    if pa.types.is_nested(target):
        if mode == "text" and pa.types.is_string(array.type):
            return _conform_json(_json_cells(array), target)
        return _nested(array, target, mode)
    convert = _converter(array.type, target, mode)
    if convert is None:
        raise _Incompatible
    out, failed = _bisect(array, convert, out_type)
    return out, {i: _value_reason(array[i].as_py(), target) for i in failed}


def _json_cells(array: pa.Array) -> list[Any]:
    """Parse the JSON text of CSV cells holding lists, maps or vectors (unparseable cells stay text)."""
    cells: list[Any] = []
    for text in array.to_pylist():
        try:
            cells.append(None if text is None or text == "" else orjson.loads(text))
        except orjson.JSONDecodeError:
            cells.append(text)
    return cells


# ---------------------------------------------------------------------------------------------------------
# JSON values (Python objects) of one column
# ---------------------------------------------------------------------------------------------------------


def _has_map(target: pa.DataType) -> bool:
    if pa.types.is_map(target):
        return True
    if pa.types.is_list(target) or pa.types.is_fixed_size_list(target) or pa.types.is_large_list(target):
        return _has_map(target.value_type)
    return False


def _conform_json(values: list[Any], target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    """Convert one column of JSON values: infer once with Arrow, else group the values by Python type."""
    out_type = _storage_of(target)
    if _has_map(target):
        # Arrow infers JSON objects as structs, so maps take the typed conversion.
        out, failed = _bisect(values, lambda part: pa.array(part, out_type), out_type)
        return out, {i: _value_reason(values[i], target) for i in failed}
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if len(kinds) > 1:
        # Arrow's inference would read True as 1.0 next to floats and round big ints next to floats.
        return _conform_grouped(values, target)
    try:
        return _conform_inferred(values, target)
    except _CONVERSION_ERRORS:
        return _conform_each(values, target)


def _conform_inferred(values: list[Any], target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    inferred = pa.array(values, from_pandas=False)
    try:
        return _conform(inferred, target, "json")
    except _Incompatible:
        invalid = np.flatnonzero(inferred.is_valid().to_numpy(zero_copy_only=False))
        bad = {int(i): _value_reason(values[i], target) for i in invalid}
        return pa.nulls(len(values), _storage_of(target)), bad


def _conform_grouped(values: list[Any], target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    """Slow path for columns whose values Arrow cannot infer as one type: one conversion per Python type."""
    groups: dict[type, list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault(type(value), []).append(index)
    pieces, order, bad = [], [], {}
    for indices in groups.values():
        part, part_bad = _conform_json([values[i] for i in indices], target)
        pieces.append(part)
        order.extend(indices)
        bad.update({indices[i]: reason for i, reason in part_bad.items()})
    merged = pa.concat_arrays(pieces)
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[np.asarray(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int64)
    return merged.take(pa.array(inverse)), bad


def _conform_each(values: list[Any], target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    out_type = _storage_of(target)
    pieces, bad = [], {}
    for index, value in enumerate(values):
        try:
            part, part_bad = _conform_inferred([value], target)
        except _CONVERSION_ERRORS:
            part, part_bad = pa.nulls(1, out_type), {0: _value_reason(value, target)}
        pieces.append(part)
        if part_bad:
            bad[index] = part_bad[0]
    return (pa.concat_arrays(pieces) if pieces else pa.array([], out_type)), bad


# ---------------------------------------------------------------------------------------------------------
# Whole chunks
# ---------------------------------------------------------------------------------------------------------


class Validator:
    """Validates rows against one version of a dataset's spec."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.logical = spec.arrow_schema()
        self.storage = spec.storage_schema()
        self._known = set(self.logical.names)
        self._column_list = ", ".join(self.logical.names)
        self._checked_schemas: set[tuple[pa.Schema, str]] = set()

    # JSON rows -------------------------------------------------------------------------------------------

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
            array, bad = _conform_json(values, target.type)
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

    # Typed columns --------------------------------------------------------------------------------------

    def validate_batch(self, batch: pa.RecordBatch | pa.Table, *, mode: Mode = "arrow", offset: int = 0) -> Validated:
        """Validate a typed batch (Arrow, Parquet, pandas; ``mode="text"`` for CSV text columns)."""
        self._check_schema(batch.schema, mode)
        problems: dict[int, list[str]] = {}
        columns = []
        for target in self.logical:
            if target.name not in batch.schema.names:
                columns.append(pa.nulls(batch.num_rows, _storage_of(target.type)))
                continue
            source = batch.column(target.name)
            if isinstance(source, pa.ChunkedArray):
                source = source.combine_chunks() if source.num_chunks != 1 else source.chunk(0)
            if mode == "text" and not pa.types.is_string(target.type) and pa.types.is_string(source.type):
                source = pc.if_else(pc.equal(source, ""), pa.scalar(None, pa.string()), source)
            array, bad = _conform(source, target.type, mode)
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
                    f"{_type_name(target.type)}. Convert the column before ingesting it."
                )
        self._checked_schemas.add((schema, mode))

    # ---------------------------------------------------------------------------------------------------

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
    if pa.types.is_null(source) or source == _storage_of(target):
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
    return _converter(normalised, target, mode) is not None
