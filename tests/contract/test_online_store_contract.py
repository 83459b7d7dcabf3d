"""One test body, every online store backend: embedded (SQLite) and Redis behave the same to their callers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from recplane.errors import InvalidInput, NotFound
from recplane.features.online import EmbeddedOnlineStore, OnlineStore, RedisOnlineStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FEATURES = ["clicks", "ctr"]


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    """A fresh, empty store of each backend (Redis: a unique key prefix on the test server)."""
    opened: OnlineStore
    if request.param == "embedded":
        opened = EmbeddedOnlineStore(tmp_path / "online")
    else:
        opened = RedisOnlineStore(request.getfixturevalue("redis_url"), prefix=f"test:{uuid.uuid4().hex}:")
    yield opened
    for view in opened.row_counts():
        opened.delete_view(view)
    opened.close()


def write(store: OnlineStore, rows: list[dict[str, Any]], *, view: str = "users", created: bool = False) -> int:
    stats = store.write(
        view,
        rows,
        key_columns=["user_id"],
        feature_columns=[name for name in rows[0] if name not in ("user_id", "event_time", "created_time")],
        event_time_column="event_time",
        created_time_column="created_time" if created else None,
    )
    return stats.rows_applied


def row(user_id: Any, clicks: int, event_time: datetime, created_time: datetime | None = None) -> dict[str, Any]:
    values = {"user_id": user_id, "clicks": clicks, "ctr": clicks / 100, "event_time": event_time}
    if created_time is not None:
        values["created_time"] = created_time
    return values


def test_older_row_is_ignored_and_newer_row_replaces(store: OnlineStore) -> None:
    assert write(store, [row(1, 10, T0)]) == 1
    assert write(store, [row(1, 5, T0 - timedelta(days=1))]) == 0
    assert store.read("users", [1], ["clicks"], ttl=None).values["clicks"] == [10]
    assert write(store, [row(1, 20, T0 + timedelta(seconds=1))]) == 1
    result = store.read("users", [1], ["clicks", "ctr"], ttl=None)
    assert result.row(0) == {"clicks": 20, "ctr": 0.2}
    assert result.event_times == [T0 + timedelta(seconds=1)]


def test_equal_event_time_is_decided_by_latest_created_time(store: OnlineStore) -> None:
    write(store, [row(1, 10, T0, created_time=T0 + timedelta(hours=1))], created=True)
    assert write(store, [row(1, 11, T0, created_time=T0 + timedelta(minutes=30))], created=True) == 0
    assert write(store, [row(1, 12, T0, created_time=T0 + timedelta(hours=2))], created=True) == 1
    assert write(store, [row(1, 13, T0, created_time=T0 + timedelta(hours=2))], created=True) == 0  # full tie
    assert store.read("users", [1], ["clicks"], ttl=None).values["clicks"] == [12]


def test_newer_wins_inside_one_batch_whatever_the_row_order(store: OnlineStore) -> None:
    rows = [row(1, 3, T0 + timedelta(hours=3)), row(1, 1, T0 + timedelta(hours=1)), row(1, 2, T0 + timedelta(hours=2))]
    write(store, rows)
    assert store.read("users", [1], ["clicks"], ttl=None).values["clicks"] == [3]


def test_rematerializing_an_older_window_keeps_newer_values(store: OnlineStore) -> None:
    newer = pa.table({"user_id": [1, 2], "clicks": [50, 60], "event_time": [T0, T0]})
    older = pa.table({"user_id": [1, 2, 3], "clicks": [1, 2, 3], "event_time": [T0 - timedelta(days=7)] * 3})
    store.write("users", newer, key_columns=["user_id"], feature_columns=["clicks"], event_time_column="event_time")
    stats = store.write(
        "users", older, key_columns=["user_id"], feature_columns=["clicks"], event_time_column="event_time"
    )
    assert (stats.rows_received, stats.rows_applied, stats.rows_ignored) == (3, 1, 2)
    assert store.read("users", [1, 2, 3], ["clicks"], ttl=None).values["clicks"] == [50, 60, 3]


def test_expired_rows_come_back_flagged_without_values(store: OnlineStore) -> None:
    write(store, [row(1, 10, T0 - timedelta(hours=30)), row(2, 20, T0 - timedelta(hours=1))])
    result = store.read("users", [1, 2], FEATURES, ttl=timedelta(days=1), now=T0)
    assert result.statuses == ["expired", "ok"]
    assert result.values == {"clicks": [None, 20], "ctr": [None, 0.2]}
    assert result.event_times == [T0 - timedelta(hours=30), T0 - timedelta(hours=1)]
    without_ttl = store.read("users", [1], ["clicks"], ttl=None, now=T0)
    assert (without_ttl.statuses, without_ttl.values["clicks"]) == (["ok"], [10])


def test_a_row_exactly_ttl_old_is_still_fresh(store: OnlineStore) -> None:
    write(store, [row(1, 10, T0 - timedelta(days=1))])
    assert store.read("users", [1], ["clicks"], ttl=timedelta(days=1), now=T0).statuses == ["ok"]


def test_missing_entity_is_flagged_not_an_error(store: OnlineStore) -> None:
    write(store, [row(1, 10, T0)])
    result = store.read("users", [404, 1], FEATURES, ttl=None)
    assert result.statuses == ["missing", "ok"]
    assert result.values["clicks"] == [None, 10]
    assert result.event_times == [None, T0]


def test_unknown_feature_is_invalid_input_naming_it(store: OnlineStore) -> None:
    write(store, [row(1, 10, T0)])
    with pytest.raises(InvalidInput, match="'clickz'") as raised:
        store.read("users", [1], ["clicks", "clickz"], ttl=None)
    assert raised.value.details["unknown_features"] == ["clickz"]


def test_unknown_view_is_not_found(store: OnlineStore) -> None:
    with pytest.raises(NotFound, match="'nobody'"):
        store.read("nobody", [1], ["clicks"], ttl=None)


def test_values_round_trip_with_their_types(store: OnlineStore) -> None:
    vector = np.array([0.1, -2.5, 3.25], dtype=np.float32)
    values = {
        "count": 7,
        "big": 2**62,
        "score": 0.1,
        "name": "zoë",
        "flag": False,
        "raw": b"\x00\xff",
        "seen_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "last_items": [5, 3, 9],
        "last_tags": ["a", "b"],
        "nested": [[1, 2], []],
        "embedding": vector,
        "nothing": None,
    }
    store.write(
        "types",
        [{"id": "u1", **values, "t": T0}],
        key_columns=["id"],
        feature_columns=list(values),
        event_time_column="t",
    )
    got = store.read("types", ["u1"], list(values), ttl=None).row(0)
    assert got.keys() == values.keys()
    for name, expected in values.items():
        if name == "embedding":
            assert got[name].dtype == np.float32 and np.array_equal(got[name], vector)
        else:
            assert got[name] == expected and type(got[name]) is type(expected), name


def test_arrow_lists_and_vectors_round_trip(store: OnlineStore) -> None:
    table = pa.table(
        {
            "item_id": pa.array([1, 2], pa.int32()),
            "last_users": pa.array([[4, 5], None], pa.list_(pa.int64())),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array([1.5, 2.5, 3.5, 4.5], pa.float32()), 2),
            "sparse": pa.array([[0.5], None], pa.list_(pa.float32())),
            "ratio": pa.array([0.25, None], pa.float64()),
            "event_time": pa.array([T0, T0], pa.timestamp("ns")),
        }
    )
    features = ["last_users", "embedding", "sparse", "ratio"]
    store.write("items", table, key_columns=["item_id"], feature_columns=features, event_time_column="event_time")
    result = store.read("items", [2, 1], features, ttl=None)
    assert result.values["last_users"] == [None, [4, 5]]
    assert result.values["ratio"] == [None, 0.25]
    assert result.values["sparse"][0] is None and result.values["sparse"][1].tolist() == [0.5]
    assert [vector.tolist() for vector in result.values["embedding"]] == [[3.5, 4.5], [1.5, 2.5]]
    assert result.event_times == [T0, T0]


def test_batch_read_keeps_the_order_of_the_keys(store: OnlineStore) -> None:
    users = list(range(1, 1201))
    table = pa.table({"user_id": users, "clicks": [u * 10 for u in users], "event_time": [T0] * len(users)})
    store.write("users", table, key_columns=["user_id"], feature_columns=["clicks"], event_time_column="event_time")
    keys = [*reversed(users), 99_999, 7, 7]
    result = store.read("users", keys, ["clicks"], ttl=None)
    assert result.keys == keys
    assert result.values["clicks"] == [*(u * 10 for u in reversed(users)), None, 70, 70]
    assert result.statuses[-3:] == ["missing", "ok", "ok"]


def test_composite_keys_and_key_types_are_distinct(store: OnlineStore) -> None:
    rows = [
        {"user": 1, "item": "a", "score": 1.0, "t": T0},
        {"user": 1, "item": "b", "score": 2.0, "t": T0},
        {"user": 2, "item": "a", "score": 3.0, "t": T0},
    ]
    store.write("pairs", rows, key_columns=["user", "item"], feature_columns=["score"], event_time_column="t")
    result = store.read("pairs", [(1, "b"), (2, "a"), ("1", "b"), (1, "c")], ["score"], ttl=None)
    assert result.values["score"] == [2.0, 3.0, None, None]
    assert result.statuses == ["ok", "ok", "missing", "missing"]
    write(store, [row(42, 1, T0)])
    assert store.read("users", [42, (42,), "42"], ["clicks"], ttl=None).statuses == ["ok", "ok", "missing"]


def test_a_newer_row_replaces_all_values_of_the_entity(store: OnlineStore) -> None:
    write(store, [row(1, 10, T0)])
    store.write(
        "users",
        [{"user_id": 1, "ctr": 0.9, "event_time": T0 + timedelta(hours=1)}],
        key_columns=["user_id"],
        feature_columns=["ctr"],
        event_time_column="event_time",
    )
    assert store.read("users", [1], FEATURES, ttl=None).row(0) == {"clicks": None, "ctr": 0.9}


def test_views_are_separate_and_counted_and_deleted(store: OnlineStore) -> None:
    write(store, [row(1, 1, T0), row(2, 2, T0)], view="a")
    write(store, [row(1, 100, T0)], view="b")
    write(store, [row(1, 0, T0 - timedelta(days=1))], view="b")
    assert store.row_counts() == {"a": 2, "b": 1}
    assert store.read("b", [1, 2], ["clicks"], ttl=None).values["clicks"] == [100, None]
    store.delete_view("a")
    store.delete_view("a")
    assert store.row_counts() == {"b": 1}
    with pytest.raises(NotFound):
        store.read("a", [1], ["clicks"], ttl=None)
    write(store, [row(1, 5, T0 - timedelta(days=9))], view="a")
    assert store.read("a", [1], ["clicks"], ttl=None).values["clicks"] == [5]


def test_arrow_tables_and_dict_rows_store_the_same_values(store: OnlineStore) -> None:
    rows = [row(1, 10, T0), row(2, 20, T0)]
    write(store, rows, view="from_dicts")
    store.write(
        "from_arrow",
        pa.Table.from_pylist(rows),
        key_columns=["user_id"],
        feature_columns=FEATURES,
        event_time_column="event_time",
    )
    from_dicts = store.read("from_dicts", [1, 2], FEATURES, ttl=None)
    from_arrow = store.read("from_arrow", [1, 2], FEATURES, ttl=None)
    assert from_dicts.values == from_arrow.values and from_dicts.event_times == from_arrow.event_times


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        ([{"user_id": 1, "clicks": 1}], {}, "lacks column"),
        ([{"user_id": 1, "clicks": 1, "event_time": "yesterday"}], {}, "must be a datetime"),
        ([{"user_id": 1.5, "clicks": 1, "event_time": T0}], {}, "not supported"),
        ([{"user_id": 1, "clicks": {1, 2}, "event_time": T0}], {}, "cannot store a set"),
        ([{"user_id": 1, "clicks": 1, "event_time": T0}], {"feature_columns": []}, "at least one feature"),
        ([{"user_id": 1, "clicks": 1, "event_time": T0}], {"feature_columns": ["user_id"]}, "more than one role"),
        (pa.table({"user_id": [1], "clicks": [1], "event_time": [1]}), {}, "must hold timestamps"),
        (pa.table({"user_id": [1, None], "clicks": [1, 2], "event_time": [T0, T0]}), {}, "null"),
    ],
)
def test_bad_writes_are_invalid_input(store: OnlineStore, rows: Any, options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "key_columns": ["user_id"],
        "feature_columns": ["clicks"],
        "event_time_column": "event_time",
        **options,
    }
    with pytest.raises(InvalidInput, match=message):
        store.write("users", rows, **arguments)


def test_bad_view_names_are_refused(store: OnlineStore) -> None:
    with pytest.raises(InvalidInput, match="not valid"):
        write(store, [row(1, 1, T0)], view="users:*")
