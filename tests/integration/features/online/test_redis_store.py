"""The Redis online store against the real server: atomic newer-wins across processes, expiry, bulk writes."""

from __future__ import annotations

import multiprocessing
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import redis

from recplane.errors import BackendUnavailable
from recplane.features.online import RedisOnlineStore, open_online_store

pytestmark = [pytest.mark.integration, pytest.mark.redis]

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ENTITIES = 300
VERSIONS = 20


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisOnlineStore]:
    opened = RedisOnlineStore(redis_url, prefix=prefix)
    yield opened
    for view in opened.row_counts():
        opened.delete_view(view)
    opened.close()


def _write_versions(url: str, prefix: str, parity: int) -> None:
    store = RedisOnlineStore(url, prefix=prefix, write_chunk_rows=50)
    rng = random.Random(parity)
    versions = [v for v in range(VERSIONS) if v % 2 == parity]
    rng.shuffle(versions)
    for version in versions:
        rows = [{"user_id": u, "version": version, "t": T0 + timedelta(minutes=version)} for u in range(ENTITIES)]
        rng.shuffle(rows)
        store.write("users", rows, key_columns=["user_id"], feature_columns=["version"], event_time_column="t")
    store.close()


def test_two_processes_writing_concurrently_keep_the_newest_row(redis_url: str, prefix: str) -> None:
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_versions, args=(redis_url, prefix, parity)) for parity in (0, 1)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    with RedisOnlineStore(redis_url, prefix=prefix) as store:
        result = store.read("users", list(range(ENTITIES)), ["version"], ttl=None)
        assert result.values["version"] == [VERSIONS - 1] * ENTITIES
        assert store.row_counts() == {"users": ENTITIES}
        store.delete_view("users")
        assert store.row_counts() == {}


def test_key_expiry_is_set_from_the_event_time(redis_url: str, prefix: str) -> None:
    now = datetime.now(UTC)
    with RedisOnlineStore(redis_url, prefix=prefix, key_expiry=timedelta(hours=1)) as store:
        store.write(
            "users",
            [{"user_id": 1, "clicks": 1, "t": now - timedelta(minutes=30)}],
            key_columns=["user_id"],
            feature_columns=["clicks"],
            event_time_column="t",
        )
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}e:users:*"))
        assert len(keys) == 1
        assert 25 * 60_000 < client.pttl(keys[0]) <= 30 * 60_000
        store.delete_view("users")
        client.close()


def test_a_large_batch_write_is_pipelined_and_complete(store: RedisOnlineStore) -> None:
    rows = 60_000
    rng = np.random.default_rng(5)
    table = pa.table(
        {
            "user_id": np.arange(rows),
            "clicks": rng.integers(0, 100, rows),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(rows * 4, dtype=np.float32)), 4),
            "t": pa.array(np.full(rows, np.datetime64("2026-03-01T00:00:00", "us"))),
        }
    )
    options = {"key_columns": ["user_id"], "feature_columns": ["clicks", "embedding"], "event_time_column": "t"}
    stats = store.write("users", table, **options)
    assert (stats.rows_received, stats.rows_applied) == (rows, rows)
    assert store.write("users", table, **options).rows_applied == 0
    assert store.row_counts() == {"users": rows}
    probe = [0, rows // 3, rows - 1]
    result = store.read("users", probe, ["clicks", "embedding"], ttl=None)
    assert result.values["clicks"] == [table["clicks"][i].as_py() for i in probe]
    assert result.values["embedding"][2].tolist() == pytest.approx(table["embedding"][rows - 1].as_py())


def test_a_batch_read_larger_than_one_script_call_keeps_key_order(store: RedisOnlineStore) -> None:
    rows = [{"user_id": u, "clicks": u * 10, "t": T0} for u in range(1_500)]
    store.write("users", rows, key_columns=["user_id"], feature_columns=["clicks"], event_time_column="t")
    asked = [*range(1_499, -1, -1), 5_000, 7]  # 1,502 keys: several read-script calls, a missing key, a repeat
    result = store.read("users", asked, ["clicks"], ttl=None)
    assert result.values["clicks"] == [u * 10 for u in range(1_499, -1, -1)] + [None, 70]
    assert result.statuses[-2:] == ["missing", "ok"]
    assert result.event_times[0] == T0


def test_an_unreachable_server_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="Cannot reach Redis"):
        RedisOnlineStore("redis://127.0.0.1:1/0")


def test_open_online_store_picks_redis_from_the_url(redis_url: str, prefix: str) -> None:
    store = open_online_store(redis_url, home="unused", prefix=prefix)
    assert isinstance(store, RedisOnlineStore)
    store.close()
