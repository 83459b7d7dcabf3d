"""Validation: precise reasons for every type, typed inputs, CSV text, and properties that hold for any rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recplane.errors import InvalidInput
from recplane.ingest import Validator
from recplane.ingest.sources import RowChunk, parse_body
from recplane.lake import load_spec

SPEC = load_spec(
    {
        "name": "typed",
        "columns": {
            "user_id": {"type": "int64", "nullable": False},
            "rating": "float32",
            "small": "int8",
            "name": "string",
            "ok": "bool",
            "ts": "timestamp",
            "day": "date",
            "tags": "list<string>",
            "emb": "vector<float32, 3>",
            "props": "map<string, string>",
            "blob": "binary",
        },
    }
)
VALIDATOR = Validator(SPEC)


def reason_of(row: dict[str, Any]) -> str:
    result = VALIDATOR.validate_rows(RowChunk([row]))
    assert result.accepted.num_rows == 0, f"{row} was accepted"
    return result.rejected_reasons[0]


def accepted(row: dict[str, Any]) -> dict[str, Any]:
    result = VALIDATOR.validate_rows(RowChunk([row]))
    assert result.rejected == 0, result.rejected_reasons
    return result.accepted.to_pylist()[0]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"user_id": 1, "rating": "abc"}, "column 'rating': value 'abc' is not float32"),
        ({"rating": 1.0}, "missing required column 'user_id'"),
        ({"user_id": None}, "column 'user_id' is null but not nullable"),
        ({"user_id": 1, "colour": "red"}, "unknown column 'colour' (columns are user_id, rating, small, name"),
        ({"user_id": 1, "emb": [1, 2]}, "column 'emb': vector has 2 values, expected 3"),
        ({"user_id": 1, "emb": [1, None, 3]}, "column 'emb': vector contains null values"),
        ({"user_id": 1, "ts": "2026-13-01"}, "column 'ts': value '2026-13-01' is not a timestamp"),
        ({"user_id": 1, "ts": 1.7e12}, "column 'ts': value 1700000000000.0 is not a timestamp"),
        ({"user_id": 1, "ts": True}, "column 'ts': value true is not a timestamp"),
        ({"user_id": 1.5}, "column 'user_id': value 1.5 is not int64"),
        ({"user_id": True}, "column 'user_id': value true is not int64"),
        ({"user_id": "7"}, "column 'user_id': value '7' is not int64"),
        ({"user_id": 1, "small": 300}, "column 'small': value 300 is out of range for int8"),
        ({"user_id": 1, "rating": 1e40}, "column 'rating': value 1e+40 is out of range for float32"),
        ({"user_id": 1, "rating": False}, "column 'rating': value false is not float32"),
        ({"user_id": 1, "name": 5}, "column 'name': value 5 is not string"),
        ({"user_id": 1, "ok": 1}, "column 'ok': value 1 is not bool"),
        ({"user_id": 1, "day": "2026-02-30"}, "column 'day': value '2026-02-30' is not a date"),
        ({"user_id": 1, "tags": ["a", 1]}, "column 'tags': value [\"a\",1] is not list<string>"),
        ({"user_id": 1, "tags": "a"}, "column 'tags': value 'a' is not list<string>"),
        ({"user_id": 1, "props": {"a": 1}}, "column 'props': value {\"a\":1} is not map<string, string>"),
        ({"user_id": 1, "blob": "not base64!"}, "column 'blob': value 'not base64!' is not base64 text"),
    ],
)
def test_rejected_row_names_column_value_and_expected_type(row: dict[str, Any], reason: str) -> None:
    assert reason_of(row).startswith(reason)


def test_row_with_several_problems_lists_all_of_them() -> None:
    reason = reason_of({"rating": "x", "colour": 1})
    assert "unknown column 'colour'" in reason
    assert "column 'rating': value 'x' is not float32" in reason
    assert "missing required column 'user_id'" in reason


def test_values_of_every_type_are_stored_in_the_storage_schema() -> None:
    row = accepted(
        {
            "user_id": 3.0,
            "rating": 4,
            "small": -5,
            "name": "x",
            "ok": False,
            "ts": "2026-01-01T10:00:00+02:00",
            "day": "2026-03-04",
            "tags": ["a", "b"],
            "emb": [1, 2.5, 3],
            "props": {"k": "v"},
            "blob": "aGVsbG8=",
        }
    )
    assert row == {
        "user_id": 3,
        "rating": 4.0,
        "small": -5,
        "name": "x",
        "ok": False,
        "ts": datetime(2026, 1, 1, 8, tzinfo=UTC),
        "day": datetime(2026, 3, 4).date(),
        "tags": ["a", "b"],
        "emb": [1.0, 2.5, 3.0],
        "props": [("k", "v")],
        "blob": b"hello",
    }
    assert VALIDATOR.validate_rows(RowChunk([{"user_id": 1}])).accepted.schema == SPEC.storage_schema()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T10:00:00Z", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01T10:00:00.250Z", datetime(2026, 1, 1, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("2026-01-01T10:00:00-01:30", datetime(2026, 1, 1, 11, 30, tzinfo=UTC)),
        ("2026-01-01T10:00:00", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01 10:00:00", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
        (1_767_261_600, datetime(2026, 1, 1, 10, tzinfo=UTC)),
        (1_767_261_600.5, datetime(2026, 1, 1, 10, 0, 0, 500_000, tzinfo=UTC)),
        (datetime(2026, 1, 1, 10), datetime(2026, 1, 1, 10, tzinfo=UTC)),
        (datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))), datetime(2026, 1, 1, 10, tzinfo=UTC)),
    ],
)
def test_timestamps_accept_iso_text_epoch_seconds_and_datetimes(value: Any, expected: datetime) -> None:
    assert accepted({"user_id": 1, "ts": value})["ts"] == expected


def test_mixed_timestamp_forms_in_one_batch_are_each_understood() -> None:
    rows = [
        {"user_id": 1, "ts": "2026-01-01T10:00:00Z"},
        {"user_id": 2, "ts": "2026-01-01T10:00:00"},
        {"user_id": 3, "ts": 1_767_261_600},
        {"user_id": 4, "ts": "later"},
    ]
    result = VALIDATOR.validate_rows(RowChunk(rows))
    assert result.accepted.column("ts").to_pylist() == [datetime(2026, 1, 1, 10, tzinfo=UTC)] * 3
    assert result.rejected_rows == [3]


def test_rows_that_are_not_objects_and_unparseable_lines_are_rejected_with_their_text() -> None:
    chunk = parse_body(b'{"user_id": 1}\n[1, 2]\n{"user_id": \n\n"text"\n')
    result = VALIDATOR.validate_rows(chunk)
    assert result.accepted.num_rows == 1
    assert result.rejected_rows == [1, 2, 3]
    assert result.rejected_raw == ["[1, 2]", '{"user_id":', '"text"']
    assert result.rejected_reasons[0] == "row is not a JSON object (got an array)"
    assert result.rejected_reasons[1].startswith("line 3: invalid JSON: ")
    assert result.rejected_reasons[2] == "row is not a JSON object (got a string)"


# Typed inputs --------------------------------------------------------------------------------------------


def test_typed_batch_rejects_bad_values_with_checked_casts() -> None:
    batch = pa.table(
        {
            "user_id": pa.array([1, None, 3, 4], pa.int32()),
            "small": pa.array([1, 2, 1000, 4], pa.int64()),
            "rating": pa.array([1.0, 2.0, 3.0, 1e300]),
            "emb": pa.array([[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2]], pa.list_(pa.float64())),
        }
    )
    result = VALIDATOR.validate_batch(batch, offset=10)
    assert result.accepted.column("user_id").to_pylist() == [1]
    assert result.rejected_rows == [11, 12, 13]
    assert result.rejected_reasons == [
        "column 'user_id' is null but not nullable",
        "column 'small': value 1000 is out of range for int8",
        "column 'rating': value 1e+300 is out of range for float32; column 'emb': vector has 2 values, expected 3",
    ]
    assert result.rejected_raw[1] == '{"user_id":3,"small":1000,"rating":3.0,"emb":[1.0,2.0,3.0]}'


def test_typed_timestamps_of_any_unit_and_zone_become_utc_microseconds() -> None:
    naive = pa.array([1_000_000_000], pa.timestamp("ns"))
    zoned = pa.array([datetime(2026, 1, 1, 12, tzinfo=UTC)], pa.timestamp("ms", tz="Europe/Paris"))
    for column, moment in (
        (naive, datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)),
        (zoned, datetime(2026, 1, 1, 12, tzinfo=UTC)),
    ):
        result = VALIDATOR.validate_batch(pa.table({"user_id": [1], "ts": column}))
        assert result.accepted.schema.field("ts").type == pa.timestamp("us", tz="UTC")
        assert result.accepted.column("ts").to_pylist() == [moment]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"user_id": [1], "colour": ["red"]}), "Unknown column(s) ['colour']"),
        (pa.table({"rating": [1.0]}), "Missing required column(s) ['user_id']"),
        (pa.table({"user_id": ["1"]}), "Column 'user_id' has type string in the input, which cannot hold int64"),
        (pa.table({"user_id": [1], "ok": [1]}), "Column 'ok' has type int64 in the input, which cannot hold bool"),
    ],
)
def test_typed_input_whose_schema_cannot_fit_is_refused_whole(table: pa.Table, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        VALIDATOR.validate_batch(table)


def test_csv_text_is_parsed_into_the_declared_types() -> None:
    text = pa.table(
        {
            "user_id": ["1", "2", "x", ""],
            "rating": ["4.5", "", "1", "2"],
            "ok": ["true", "false", "true", "true"],
            "ts": ["2026-01-01T00:00:00Z", "1767225600", "", ""],
            "tags": ['["a"]', "", "", ""],
            "name": ["", "b", "c", "d"],
        }
    )
    result = VALIDATOR.validate_batch(text, mode="text")
    assert result.accepted.to_pylist()[0]["tags"] == ["a"]
    assert result.accepted.column("user_id").to_pylist() == [1, 2]
    assert result.accepted.column("rating").to_pylist() == [4.5, None]
    assert result.accepted.column("name").to_pylist() == ["", "b"]
    assert result.accepted.column("ts").to_pylist() == [datetime(2026, 1, 1, tzinfo=UTC)] * 2
    assert result.rejected_reasons == [
        "column 'user_id': value 'x' is not int64",
        "column 'user_id' is null but not nullable",
    ]


# Properties ----------------------------------------------------------------------------------------------

PROPERTY_SPEC = load_spec(
    {
        "name": "prop",
        "columns": {
            "id": {"type": "int64", "nullable": False},
            "score": "float32",
            "label": "string",
            "flag": "bool",
            "ts": "timestamp",
            "tags": "list<string>",
        },
    }
)
PROPERTY_VALIDATOR = Validator(PROPERTY_SPEC)
INT64 = (-(2**63), 2**63 - 1)
EPOCH = (-62_135_596_800, 253_402_300_799)
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1))
junk = st.one_of(
    st.text(max_size=5),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.none(),
)
values = {
    "id": st.one_of(st.integers(*INT64), st.integers(-(2**40), 2**40).map(float), junk),
    "score": st.one_of(st.floats(-1e30, 1e30, allow_nan=False), st.integers(-(2**31), 2**31), junk),
    "label": st.one_of(st.text(max_size=8), junk),
    "flag": st.one_of(st.booleans(), junk),
    "ts": st.one_of(
        moments.map(lambda d: d.isoformat()),
        moments.map(lambda d: d.isoformat() + "Z"),
        st.integers(0, 7_000_000_000),
        junk,
    ),
    "tags": st.one_of(st.lists(st.text(max_size=3), max_size=3), junk),
}
rows_strategy = st.lists(
    st.fixed_dictionaries({}, optional={**values, "extra": st.integers()}),
    max_size=25,
)


def expected(column: str, value: Any) -> tuple[bool, Any]:
    """The oracle: whether ``value`` is valid for ``column`` and the value it must be stored as."""
    if value is None:
        return column != "id", None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if column == "id":
        if isinstance(value, float):
            return value.is_integer() and INT64[0] <= value < 2**63, int(value) if value.is_integer() else None
        return is_number and INT64[0] <= value <= INT64[1], value
    if column == "score":
        if isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
            return False, None
        ok = is_number and abs(float(value)) <= float(np.finfo(np.float32).max)
        return ok, float(np.float32(value)) if ok else None
    if column == "label":
        return isinstance(value, str), value
    if column == "flag":
        return isinstance(value, bool), value
    if column == "ts":
        if is_number:
            if not EPOCH[0] <= value <= EPOCH[1]:
                return False, None
            return True, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round(value * 1_000_000))
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return False, None
            return True, parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return False, None
    if column == "tags":
        return isinstance(value, list) and all(isinstance(v, str) for v in value), value
    raise AssertionError(column)


def row_is_valid(row: dict[str, Any]) -> bool:
    if "extra" in row or "id" not in row:
        return False
    return all(expected(column, value)[0] for column, value in row.items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows_strategy)
def test_every_row_is_accepted_or_rejected_once_and_accepted_values_equal_the_input(
    rows: list[dict[str, Any]],
) -> None:
    result = PROPERTY_VALIDATOR.validate_rows(RowChunk(rows))
    rejected = result.rejected_rows
    assert len(set(rejected)) == len(rejected)
    assert result.accepted.num_rows + len(rejected) == len(rows)
    kept = [i for i in range(len(rows)) if i not in set(rejected)]
    assert [row_is_valid(rows[i]) for i in kept] == [True] * len(kept)
    assert [row_is_valid(rows[i]) for i in rejected] == [False] * len(rejected)
    for position, stored in zip(kept, result.accepted.to_pylist(), strict=True):
        for column, value in rows[position].items():
            want = expected(column, value)[1]
            got = stored[column]
            if isinstance(want, float) and isinstance(got, float):
                assert math.isclose(got, want, rel_tol=1e-6), (column, value, got)
            else:
                assert got == want, (column, value, got)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(-(10**12), 10**12).map(str),
            st.text(alphabet="abcxyz.", min_size=1, max_size=4),
            st.sampled_from(["", None]),
        ),
        max_size=40,
    )
)
def test_text_cells_are_parsed_exactly_and_bad_cells_found_by_bisection(cells: list[str | None]) -> None:
    result = PROPERTY_VALIDATOR.validate_batch(pa.table({"id": pa.array(cells, pa.string())}), mode="text")
    numbers = [int(cell) for cell in cells if cell and cell.lstrip("-").isdigit()]
    assert result.accepted.column("id").to_pylist() == numbers
    assert result.rejected == len(cells) - len(numbers)
    bad_text = [cell for cell in cells if cell and not cell.lstrip("-").isdigit()]
    assert [r for r in result.rejected_reasons if "is not int64" in r] == [
        f"column 'id': value {cell!r} is not int64" for cell in bad_text
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.dictionaries(st.sampled_from(["id", "label"]), st.integers(-(2**31), 2**31)),
            st.text().filter(lambda t: "\n" not in t and "\r" not in t),
        ),
        max_size=20,
    )
)
def test_every_ndjson_line_becomes_exactly_one_row(items: list[Any]) -> None:
    import orjson

    lines = [b'{"id": 0}'] + [orjson.dumps(i) if isinstance(i, dict) else i.encode() for i in items]
    result = PROPERTY_VALIDATOR.validate_rows(parse_body(b"\n".join(lines)))
    assert result.accepted.num_rows + result.rejected == len([line for line in lines if line.strip()])


def test_arrow_map_columns_conform_including_slices_and_bad_values() -> None:
    from recplane.ingest.conversion import conform

    maps = pa.array([[("a", 1)], None, [("b", 2), ("c", 3)]], pa.map_(pa.string(), pa.int64()))
    out, bad = conform(maps.slice(1), pa.map_(pa.string(), pa.int64()), "typed")
    assert bad == {} and out.to_pylist() == [None, [("b", 2), ("c", 3)]]
    wide = pa.array([[("a", 2**40)], [("b", 1)]], pa.map_(pa.string(), pa.int64()))
    out, bad = conform(wide, pa.map_(pa.string(), pa.int32()), "typed")
    assert list(bad) == [0] and "map value" in bad[0] and out.to_pylist()[1] == [("b", 1)]
