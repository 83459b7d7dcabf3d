"""Materialization and online lookups end to end, on the embedded store and on a real Redis.

The central check: after materializing as of ``end``, an online lookup at ``end`` returns, for every entity,
exactly what a training set gives a label at ``end`` — on seeded synthetic data with event-time ties (broken
by created time and, at full ties, by value), expired values, empty windows and unknown entities.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from recplane import Client
from recplane.config import Settings
from recplane.errors import InvalidInput, NotFound
from recplane.features.materialize import WATERMARK_VIEW

T0 = datetime(2026, 1, 1, tzinfo=UTC)
END = T0 + timedelta(days=10)
USERS = 60
DEFINITIONS = """
entities:
  - {name: user, join_keys: [user_id]}
feature_views:
  - name: user_stats
    entities: [user]
    source: purchases
    created_time: created
    ttl: 2d
    features:
      - price
      - {name: spend, expr: "price * quantity"}
      - {name: buys_3d, agg: count, window: 3d}
      - {name: spend_3d, agg: sum, column: price, window: 3d}
      - {name: recent, agg: last_n, column: quantity, n: 3, window: 5d}
  - name: user_last
    entities: [user]
    source: purchases
    features: [quantity]
feature_services:
  - {name: ranker, features: ["user_stats:*", "user_last:quantity"]}
"""
SPEC = {
    "name": "purchases",
    "event_time": "ts",
    "columns": {
        "user_id": "int64",
        "price": "float64",
        "quantity": "int32",
        "ts": "timestamp",
        "created": "timestamp",
    },
}


def synthetic_rows(seed: int = 7) -> list[dict[str, object]]:
    """Rows over 12 days (some after END), many on a coarse hour grid so event times tie."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for user in range(1, USERS + 1):
        for _ in range(rng.randint(1, 8)):
            event = T0 + timedelta(hours=rng.randint(0, 12 * 24 // 6) * 6)
            created = event + timedelta(minutes=rng.choice([0, 0, 5, 30]))
            rows.append(
                {
                    "user_id": user,
                    "price": float(rng.randint(1, 5)),
                    "quantity": rng.randint(1, 4),
                    "ts": event,
                    "created": created,
                }
            )
    # Exactly at the TTL boundary at END: fresh offline (event time >= END - ttl) and online alike.
    rows.append({"user_id": USERS + 1, "price": 1.0, "quantity": 1, "ts": END - timedelta(days=2), "created": T0})
    # A full tie on (event, created): the larger value wins, offline and online.
    for price in (3.0, 9.0):
        rows.append(
            {
                "user_id": USERS + 2,
                "price": price,
                "quantity": 2,
                "ts": END - timedelta(hours=1),
                "created": END - timedelta(hours=1),
            }
        )
    return rows


@pytest.fixture(params=["embedded", "redis"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    location = "embedded"
    prefix_cleanup = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        location = url
        prefix_cleanup = url
    # These tests pin `end` in the past; streaming updates (materializing as of now) are tested on their own.
    settings = Settings(home=tmp_path / "home", online_store=location, stream_features=False)
    with Client(settings=settings) as opened:
        if prefix_cleanup is not None:
            _isolate_redis(opened)
        opened.create_dataset(SPEC)
        opened.ingest("purchases", synthetic_rows())
        opened.apply_features(DEFINITIONS)
        yield opened
        if prefix_cleanup is not None:
            store = opened._impl.runtime.online_store  # type: ignore[union-attr]
            for view in store.row_counts():
                store.delete_view(view)


def _isolate_redis(client: Client) -> None:
    """A key prefix of its own, so parallel test runs on one Redis never see each other's rows."""
    from recplane.features.online import RedisOnlineStore

    runtime = client._impl.runtime  # type: ignore[union-attr]
    runtime.__dict__["online_store"] = RedisOnlineStore(
        runtime.settings.online_store, prefix=f"recplane:test:{uuid.uuid4().hex[:8]}:"
    )


def _offline(client: Client, users: list[int], at: datetime) -> pa.Table:
    labels = pa.table(
        {"user_id": pa.array(users, pa.int64()), "ts": pa.array([at] * len(users), pa.timestamp("us", "UTC"))}
    )
    return client.training_set(labels, "ranker")


def test_online_equals_the_training_set_at_end_for_every_entity(client: Client) -> None:
    result = client.materialize(end=END)
    assert {view.view for view in result.views} == {"user_stats", "user_last"}
    assert all(view.rows_read > 0 and view.rows_written > 0 for view in result.views)
    users = list(range(1, USERS + 4))  # USERS + 3 never had a row
    online = client.online_features({"user_id": users}, "ranker", now=END)
    offline = _offline(client, users, END)
    assert online.features == ["price", "spend", "buys_3d", "spend_3d", "recent", "quantity"]
    for name in online.features:
        assert online.values[name] == offline[name].to_pylist(), name
    statuses = dict(zip(users, online.statuses, strict=True))
    assert statuses[USERS + 3] == "missing"
    assert statuses[USERS + 1] == "ok"  # exactly at END - ttl: still fresh, as offline
    assert statuses[USERS + 3] == "missing"
    assert online.values["price"][users.index(USERS + 2)] == 9.0  # full tie → larger value, as offline
    assert online.event_times["user_stats"][users.index(USERS + 2)] == END - timedelta(hours=1)
    assert online.event_times["user_stats.aggregates"][0] == END


def test_ttl_expiry_is_reported_as_time_passes(client: Client) -> None:
    client.materialize(["user_stats"], end=END)
    later = client.online_features([{"user_id": USERS + 2}], ["user_stats:price"], now=END + timedelta(days=3))
    assert later.statuses == ["expired"]
    assert later.values["price"] == [None]
    assert later.event_times["user_stats"] == [END - timedelta(hours=1)]
    fresh = client.online_features([{"user_id": USERS + 2}], ["user_stats:price"], now=END)
    assert (fresh.statuses, fresh.values["price"]) == (["ok"], [9.0])


def test_incremental_reads_only_new_rows_and_older_rows_never_win(client: Client) -> None:
    first = client.materialize(["user_last"], end=END)
    assert client._impl.runtime.materializer.watermark("user_last") == END  # type: ignore[union-attr]
    later = END + timedelta(hours=3)
    client.ingest(
        "purchases",
        [
            {"user_id": 1, "price": 1.0, "quantity": 42, "ts": END + timedelta(hours=1), "created": END},
            # late and older than user 1's new value: must not overwrite it
            {"user_id": 1, "price": 1.0, "quantity": 7, "ts": END - timedelta(hours=1), "created": later},
        ],
    )
    second = client.materialize(["user_last"], end=later, incremental=True)
    view = second.views[0]
    assert view.start == END and view.incremental
    # Only the two new rows plus rows after END (the synthetic data runs past it) are read.
    total_rows = client.read("purchases").num_rows
    assert view.rows_read < first.views[0].rows_read < total_rows
    assert client.online_features({"user_id": [1]}, ["user_last:quantity"], now=later).values["quantity"] == [42]
    offline = _offline(client, list(range(1, USERS + 3)), later)
    online = client.online_features({"user_id": list(range(1, USERS + 3))}, ["user_last:quantity"], now=later)
    assert online.values["quantity"] == offline["quantity"].to_pylist()


def test_rematerializing_an_older_window_keeps_newer_values(client: Client) -> None:
    client.materialize(["user_stats"], end=END)
    before = client.online_features({"user_id": list(range(1, USERS + 3))}, ["user_stats:*"], now=END)
    client.materialize(["user_stats"], end=END - timedelta(days=4))
    after = client.online_features({"user_id": list(range(1, USERS + 3))}, ["user_stats:*"], now=END)
    assert after.values == before.values
    assert client._impl.runtime.materializer.watermark("user_stats") == END  # type: ignore[union-attr]


def test_small_entity_chunks_give_the_same_answer(client: Client) -> None:
    runtime = client._impl.runtime  # type: ignore[union-attr]
    runtime.materializer.materialize(["user_stats"], principal=client._impl._principal, end=END, entity_chunk=7)  # type: ignore[union-attr]
    users = list(range(1, USERS + 3))
    online = client.online_features({"user_id": users}, ["user_stats:*"], now=END)
    offline = _offline(client, users, END)
    for name in online.features:
        assert online.values[name] == offline[name].to_pylist(), name


def test_unknown_features_are_errors_naming_them_and_unknown_entities_are_not(client: Client) -> None:
    client.materialize(end=END)
    with pytest.raises(InvalidInput, match="nope"):
        client.online_features({"user_id": [1]}, ["user_stats:nope"])
    with pytest.raises(InvalidInput, match="ghost_view"):
        client.online_features({"user_id": [1]}, ["ghost_view:x"])
    with pytest.raises(InvalidInput, match="user_id"):
        client.online_features({"item_id": [1]}, ["user_stats:price"])
    found = client.online_features({"user_id": [999_999, None]}, ["user_stats:price"], now=END)
    assert found.statuses == ["missing", "missing"] and found.values["price"] == [None, None]
    assert WATERMARK_VIEW in client._impl.runtime.online_store.row_counts()  # type: ignore[union-attr]


def test_a_view_never_materialized_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound, match="materialize"):
        client.online_features({"user_id": [1]}, ["user_last:quantity"])


def test_ingested_events_reach_the_online_store_within_seconds(tmp_path: Path) -> None:
    """With streaming on (the default), a commit to a materialized view's source updates it in the background."""
    now = datetime.now(UTC).replace(microsecond=0)
    with Client(settings=Settings(home=tmp_path / "home")) as client:
        client.create_dataset(SPEC)
        first = {"user_id": 1, "price": 2.0, "quantity": 1, "ts": now - timedelta(hours=2), "created": now}
        client.ingest("purchases", [first])
        client.apply_features(DEFINITIONS)
        client.materialize()
        assert client.online_features({"user_id": [1]}, ["user_stats:price", "user_stats:buys_3d"]).values == {
            "price": [2.0],
            "buys_3d": [1],
        }
        created = datetime.now(UTC)  # rows are created when they arrive: after the last materialization
        later = {"user_id": 1, "price": 7.0, "quantity": 3, "ts": now - timedelta(minutes=1), "created": created}
        client.ingest("purchases", [later])
        deadline, values = time.monotonic() + 20, {}
        while time.monotonic() < deadline:
            values = client.online_features({"user_id": [1]}, ["user_stats:price", "user_stats:buys_3d"]).values
            if values == {"price": [7.0], "buys_3d": [2]}:
                break
            time.sleep(0.2)
        assert values == {"price": [7.0], "buys_3d": [2]}


PAIR_DEFINITIONS = """
entities:
  - {name: user, join_keys: [user_id]}
  - {name: item, join_keys: [item_id]}
feature_views:
  - {name: pair_last, entities: [user, item], source: ratings, features: [rating]}
"""


def test_pair_keys_split_across_entity_chunks_match_the_training_set(tmp_path: Path) -> None:
    """Chunks cut the sorted (user, item) keys, so one user's pairs can span two chunks (whose source reads
    overlap on that user): every pair still gets the training set's value."""
    rng = random.Random(3)
    rows = [
        {"user_id": user, "item_id": rng.randint(1, 4), "rating": rng.randint(1, 5), "ts": T0 + timedelta(hours=h)}
        for user in range(1, 6)
        for h in range(rng.randint(2, 9))
    ]
    spec = {
        "name": "ratings",
        "event_time": "ts",
        "columns": {"user_id": "int64", "item_id": "int64", "rating": "int64", "ts": "timestamp"},
    }
    settings = Settings(home=tmp_path / "home", stream_features=False)
    with Client(settings=settings) as client:
        client.create_dataset(spec)
        client.ingest("ratings", rows)
        client.apply_features(PAIR_DEFINITIONS)
        runtime = client._impl.runtime  # type: ignore[union-attr]
        done = runtime.materializer.materialize(
            ["pair_last"],
            principal=client._impl._principal,
            end=END,
            entity_chunk=3,  # type: ignore[union-attr]
        )
        pairs = sorted({(row["user_id"], row["item_id"]) for row in rows})
        assert done.views[0].entities == done.rows_written == len(pairs)
        entities = {"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs]}
        online = client.online_features(entities, ["pair_last:rating"], now=END)
        labels = pa.table({**entities, "ts": pa.array([END] * len(pairs), pa.timestamp("us", "UTC"))})
        offline = client.training_set(labels, ["pair_last:rating"])
        assert online.values["rating"] == offline["rating"].to_pylist()
