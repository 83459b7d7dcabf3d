"""Column conversion for validation: any input column becomes the declared Arrow type, or says which rows fail.

A whole column is converted at once with Arrow (inference for JSON values, checked casts for typed columns);
only a failing column is bisected to find its bad rows, and JSON values of mixed Python types are grouped
by type and converted group by group. The rules are listed in :mod:`recplane.ingest.validation`.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from recplane.ingest.sources import Mode
from recplane.lake.spec import type_string

__all__ = ["UTC_MICROS", "Convert", "conform", "conform_json", "converter", "storage_of", "type_name"]

UTC_MICROS = pa.timestamp("us", tz="UTC")
_CONVERSION_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError, binascii.Error)
_SHOW_LIMIT = 80
Convert = Callable[[Any], pa.Array]


class _Incompatible(Exception):
    """A value's type can never become the column's type (no per-value check needed)."""


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


def type_name(target: pa.DataType) -> str:
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
        return f"value {_show(value)} is out of range for {type_name(target)}"
    return f"value {_show(value)} is not {type_name(target)}"


# Converting one Arrow array to a target type


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


def converter(source: pa.DataType, target: pa.DataType, mode: Mode) -> Convert | None:
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


def storage_of(target: pa.DataType) -> pa.DataType:
    return pa.list_(target.value_type) if pa.types.is_fixed_size_list(target) else target


def _offsets(array: pa.Array) -> pa.Array:
    lengths = pc.list_value_length(array).fill_null(0)
    return pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths).cast(pa.int32())])


def _nested(array: pa.Array, target: pa.DataType, mode: Mode) -> tuple[pa.Array, dict[int, str]]:
    """Lists, vectors and maps: convert the flattened children, then blame their parent rows."""
    if pa.types.is_map(target):
        if not pa.types.is_map(array.type):
            raise _Incompatible
        entries = _entries_view(array)
        flat = pc.list_flatten(entries)
        keys, key_bad = conform(flat.field(0), target.key_type, mode)
        items, item_bad = conform(flat.field(1), target.item_type, mode)
        parents = pc.list_parent_indices(entries).to_numpy()
        bad = {int(parents[i]): f"map key: {reason}" for i, reason in key_bad.items()}
        bad.update({int(parents[i]): f"map value: {reason}" for i, reason in item_bad.items()})
        out = pa.MapArray.from_arrays(_offsets(entries), keys, items, type=target, mask=array.is_null())
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


def _entries_view(array: pa.Array) -> pa.Array:
    """A map array seen as the list of key/value structs it is stored as (pyarrow 26 has no map flatten kernel)."""
    map_type = array.type
    entry = pa.struct([pa.field("key", map_type.key_type, nullable=False), pa.field("value", map_type.item_type)])
    return array.view(pa.list_(pa.field("entries", entry, nullable=False)))


def _conform_children(flat: pa.Array, target: pa.DataType, mode: Mode) -> tuple[pa.Array, dict[int, str]]:
    try:
        return conform(flat, target, mode)
    except _Incompatible:
        if mode != "json":
            raise
        # Elements of the wrong type blame their rows; empty lists and null elements stay valid.
        wrong = np.flatnonzero(flat.is_valid().to_numpy(zero_copy_only=False)).tolist()
        return pa.nulls(len(flat), storage_of(target)), {i: _value_reason(flat[i].as_py(), target) for i in wrong}


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


def conform(array: pa.Array, target: pa.DataType, mode: Mode) -> tuple[pa.Array, dict[int, str]]:
    """Convert one typed array to ``target`` (storage form); bad rows become nulls with a reason."""
    array = _normalised(array)
    out_type = storage_of(target)
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), out_type), {}
    if array.type == out_type and not pa.types.is_nested(out_type):
        return array, {}
    if pa.types.is_nested(target):
        if mode == "text" and pa.types.is_string(array.type):
            return conform_json(_json_cells(array), target)
        return _nested(array, target, mode)
    convert = converter(array.type, target, mode)
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


# JSON values (Python objects) of one column


def _has_map(target: pa.DataType) -> bool:
    if pa.types.is_map(target):
        return True
    if pa.types.is_list(target) or pa.types.is_fixed_size_list(target) or pa.types.is_large_list(target):
        return _has_map(target.value_type)
    return False


def conform_json(values: list[Any], target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    """Convert one column of JSON values: infer once with Arrow, else group the values by Python type."""
    out_type = storage_of(target)
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
        return conform(inferred, target, "json")
    except _Incompatible:
        invalid = np.flatnonzero(inferred.is_valid().to_numpy(zero_copy_only=False))
        bad = {int(i): _value_reason(values[i], target) for i in invalid}
        return pa.nulls(len(values), storage_of(target)), bad


def _conform_grouped(values: list[Any], target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    """Slow path for columns whose values Arrow cannot infer as one type: one conversion per Python type."""
    groups: dict[type, list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault(type(value), []).append(index)
    pieces, order, bad = [], [], {}
    for indices in groups.values():
        part, part_bad = conform_json([values[i] for i in indices], target)
        pieces.append(part)
        order.extend(indices)
        bad.update({indices[i]: reason for i, reason in part_bad.items()})
    merged = pa.concat_arrays(pieces)
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[np.asarray(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int64)
    return merged.take(pa.array(inverse)), bad


def _conform_each(values: list[Any], target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    out_type = storage_of(target)
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
