"""The pure side of skew reports: value matching, differences, per-feature counts, examples, the log's rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recplane.errors import InvalidInput, NotFound
from recplane.features.served_log import LOG_COLUMNS, ServedLookup, served_rows, value_json
from recplane.features.skew import (
    compare_feature,
    numeric_difference,
    parse_since,
    since_text,
    skew_report,
    values_match,
)

T = datetime(2026, 3, 1, tzinfo=UTC)


def _row(feature: str, online: Any, offline: Any, *, user: int = 1, request: str = "r1", status: str = "ok") -> dict:
    return {
        "request_id": request,
        "served_at": T,
        "entity": value_json({"user_id": user}),
        "feature": feature,
        "status": status,
        "online": value_json(online),
        "offline": value_json(offline),
    }


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize(
    ("online", "offline"),
    [
        (1.0, 1.0 + 1e-9),  # relative tolerance
        (0.0, 1e-12),  # absolute tolerance near zero
        (5, 5.0),  # an int and a float of equal value
        (None, None),
        ([1.0, 2.0], [1.0, 2.0 + 1e-10]),
        ({"a": 1.5}, {"a": 1.5}),
        ("x", "x"),
        (True, True),
        (float("nan"), float("nan")),
        ([], []),
    ],
)
def test_values_that_match(online: Any, offline: Any) -> None:
    assert values_match(online, offline)


@pytest.mark.parametrize(
    ("online", "offline"),
    [
        (1.0, 1.001),
        (1_000_000, 1_000_001),  # integers compare exactly, whatever the relative tolerance
        (None, 0),  # missing vs present
        (0, None),
        (None, []),
        ([1.0, 2.0], [1.0]),
        ([1.0, 2.0], [1.0, 2.5]),
        ({"a": 1}, {"b": 1}),
        (True, 1),  # a bool is not a number
        ("1", 1),
        (float("nan"), 1.0),
    ],
)
def test_values_that_differ(online: Any, offline: Any) -> None:
    assert not values_match(online, offline)


def test_tolerance_can_be_tightened_or_loosened() -> None:
    assert not values_match(1.0, 1.0 + 1e-9, rel_tol=0.0, abs_tol=0.0)
    assert values_match(100.0, 101.0, rel_tol=0.02)


def test_numeric_difference_is_absolute_and_symmetric_relative() -> None:
    assert numeric_difference(3.0, 4.0) == (1.0, 0.25)
    assert numeric_difference(4, 3) == (1.0, 0.25)
    assert numeric_difference(-1.0, 1.0) == (2.0, 2.0)
    assert numeric_difference(0, 0.0) == (0.0, 0.0)
    assert numeric_difference(None, 1.0) is None
    assert numeric_difference([1.0], [1.0]) is None
    assert numeric_difference(True, 1) is None
    assert numeric_difference(float("nan"), 1.0) is None


def test_compare_feature_counts_mismatches_missing_sides_and_differences() -> None:
    rows = [
        _row("v:price", 2.0, 2.0, user=1),
        _row("v:price", 5.0, 3.0, user=2),  # |diff| 2, rel 0.4
        _row("v:price", 1.0, 1.0000000001, user=3),  # within tolerance
        _row("v:price", None, 4.0, user=4, status="missing"),
        _row("v:price", 6.0, None, user=5),
        _row("v:price", None, None, user=6, status="expired"),
    ]
    result = compare_feature("v:price", rows)
    assert result.rows_compared == 6
    assert result.mismatches == 3
    assert result.mismatch_rate == pytest.approx(0.5)
    assert (result.missing_online, result.missing_offline) == (1, 1)
    assert result.numeric_rows == 3
    assert result.max_abs_diff == pytest.approx(2.0)
    assert result.mean_abs_diff == pytest.approx((0 + 2.0 + 1e-10) / 3)
    assert result.max_rel_diff == pytest.approx(0.4)
    assert [example.entity for example in result.examples] == [{"user_id": 2}, {"user_id": 4}, {"user_id": 5}]
    missing = result.examples[1]
    assert (missing.online, missing.offline, missing.status, missing.served_at) == (None, 4.0, "missing", T)


def test_examples_are_capped_and_keep_log_order() -> None:
    rows = [_row("v:n", user, user + 1, user=user, request=f"r{user}") for user in range(10)]
    result = compare_feature("v:n", rows, max_examples=3)
    assert result.mismatches == 10
    assert [example.request_id for example in result.examples] == ["r0", "r1", "r2"]
    assert result.examples[0].online == 0 and result.examples[0].offline == 1


def test_lists_and_vectors_are_compared_element_wise_without_numeric_differences() -> None:
    rows = [
        _row("v:emb", np.array([0.1, 0.2], dtype=np.float32), [0.10000000149011612, 0.20000000298023224]),
        _row("v:recent", [1, 2, 3], [1, 2, 3]),
        _row("v:recent", [1, 2], [1, 2, 3], user=2),
    ]
    report = skew_report(_table(rows), dataset="log", since=T - timedelta(days=1), until=T)
    assert report.feature("v:emb").mismatches == 0
    recent = report.feature("v:recent")
    assert (recent.rows_compared, recent.mismatches, recent.numeric_rows) == (2, 1, 0)
    assert recent.mean_abs_diff is None and recent.max_rel_diff is None


def test_report_totals_order_worst_first_and_count_requests() -> None:
    rows = [
        _row("a:x", 1, 1, request="r1"),
        _row("a:x", 1, 1, user=2, request="r2"),
        _row("b:y", 1, 2, request="r1"),
        _row("b:y", 1, 1, user=2, request="r2"),
        _row("c:z", None, 3, request="r3"),
    ]
    report = skew_report(
        _table(rows), dataset="log", since=T - timedelta(days=1), until=T, skipped={"d:w": "view gone"}
    )
    assert [row.feature for row in report.features] == ["c:z", "b:y", "a:x"]
    assert (report.requests, report.rows_compared, report.mismatches) == (3, 5, 2)
    assert report.mismatch_rate == pytest.approx(0.4)
    assert report.skipped == {"d:w": "view gone"}
    assert report.dataset == "log" and report.until == T
    with pytest.raises(NotFound, match="nope"):
        report.feature("nope")


def test_an_empty_window_reports_nothing_and_missing_columns_are_an_error() -> None:
    empty = pa.table({name: pa.array([], pa.string()) for name in _row("a:x", 1, 1)})
    report = skew_report(empty, dataset="log", since=T, until=T)
    assert (report.rows_compared, report.mismatch_rate, report.features) == (0, 0.0, [])
    with pytest.raises(InvalidInput, match="offline"):
        skew_report(empty.drop_columns(["offline"]), dataset="log", since=T, until=T)


def test_value_json_encodes_equal_values_alike() -> None:
    paris = timezone(timedelta(hours=1))
    assert value_json(datetime(2026, 3, 1, 1, 0, tzinfo=paris)) == value_json(datetime(2026, 3, 1, 0, 0))
    assert value_json(np.array([1.5, 2.0], dtype=np.float32)) == value_json([1.5, 2.0])
    assert value_json((1, 2)) == value_json([1, 2])
    assert value_json({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert orjson.loads(value_json(b"\x00\x01")) == "AAE="
    assert value_json(None) == "null"


def test_served_rows_are_one_per_entity_and_feature_with_the_view_status() -> None:
    lookup = ServedLookup(
        request_id="req",
        served_at=T,
        entities=[{"user_id": 1}, {"user_id": 2}],
        features=[("price", "stats:price", "stats"), ("buys", "stats:buys", "stats.aggregates")],
        values={"price": [2.5, None], "buys": [3, 0]},
        view_statuses={"stats": ["ok", "expired"], "stats.aggregates": ["ok", "missing"]},
        event_times={"stats": [T - timedelta(hours=1), T - timedelta(days=9)], "stats.aggregates": [T, None]},
    )
    table = served_rows([lookup])
    assert table.schema.names == list(LOG_COLUMNS)
    assert table.num_rows == lookup.row_count == 4
    rows = table.to_pylist()
    assert [(r["entity"], r["feature"], r["value"], r["status"]) for r in rows] == [
        ('{"user_id":1}', "stats:price", "2.5", "ok"),
        ('{"user_id":2}', "stats:price", "null", "expired"),
        ('{"user_id":1}', "stats:buys", "3", "ok"),
        ('{"user_id":2}', "stats:buys", "0", "missing"),
    ]
    assert rows[1]["value_event_time"] == T - timedelta(days=9) and rows[3]["value_event_time"] is None
    assert {r["request_id"] for r in rows} == {"req"} and {r["served_at"] for r in rows} == {T}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("6h", timedelta(hours=6)),
        (" 1d ", timedelta(days=1)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("2026-03-01T00:00:00Z", T),
        ("2026-03-01T01:00:00+01:00", T),
        ("2026-03-01", T),
    ],
)
def test_parse_since_reads_periods_and_times(text: str, expected: timedelta | datetime) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "1x", "d1", "0d", "yesterday", "-1d", "1.5h"])
def test_parse_since_refuses_anything_else_with_examples(text: str) -> None:
    with pytest.raises(InvalidInput, match="1d"):
        parse_since(text)


@given(st.integers(min_value=1, max_value=10**8))
def test_since_text_round_trips_whole_second_periods(seconds: int) -> None:
    assert parse_since(since_text(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


@given(st.datetimes(timezones=st.just(UTC)))
def test_since_text_round_trips_times(moment: datetime) -> None:
    assert parse_since(since_text(moment)) == moment
