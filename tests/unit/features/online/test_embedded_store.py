"""The embedded (SQLite) online store: processes, threads, persistence and bulk writes on one home folder."""

from __future__ import annotations

import multiprocessing
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recplane.errors import InvalidInput
from recplane.features.online import EmbeddedOnlineStore, open_online_store

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ENTITIES = 400
VERSIONS = 30


def _write_versions(folder: str, parity: int, seed: int) -> None:
    """Write every entity at each version of one parity, in shuffled small batches (a second process)."""
    store = EmbeddedOnlineStore(folder, busy_timeout_s=60)
    rng = random.Random(seed)
    versions = [v for v in range(VERSIONS) if v % 2 == parity]
    rng.shuffle(versions)
    for version in versions:
        rows = [
            {"user_id": user, "version": version, "event_time": T0 + timedelta(minutes=version)}
            for user in range(ENTITIES)
        ]
        rng.shuffle(rows)
        for start in range(0, len(rows), 100):
            store.write(
                "users",
                rows[start : start + 100],
                key_columns=["user_id"],
                feature_columns=["version"],
                event_time_column="event_time",
            )
    store.close()


def test_two_processes_writing_concurrently_keep_the_newest_row_per_entity(tmp_path: Path) -> None:
    folder = str(tmp_path / "online")
    EmbeddedOnlineStore(folder).close()
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_versions, args=(folder, parity, parity)) for parity in (0, 1)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    with EmbeddedOnlineStore(folder) as store:
        result = store.read("users", list(range(ENTITIES)), ["version"], ttl=None)
        assert result.values["version"] == [VERSIONS - 1] * ENTITIES
        assert set(result.event_times) == {T0 + timedelta(minutes=VERSIONS - 1)}
        assert store.row_counts() == {"users": ENTITIES}


def test_rows_and_schema_persist_across_store_instances(tmp_path: Path) -> None:
    with EmbeddedOnlineStore(tmp_path) as first:
        first.write(
            "users",
            [{"user_id": 1, "clicks": 3, "t": T0}],
            key_columns=["user_id"],
            feature_columns=["clicks"],
            event_time_column="t",
        )
    with EmbeddedOnlineStore(tmp_path) as second:
        assert second.read("users", [1], ["clicks"], ttl=None).values["clicks"] == [3]
        with pytest.raises(InvalidInput, match="'views'"):
            second.read("users", [1], ["views"], ttl=None)


def test_a_reader_notices_a_view_recreated_by_another_store(tmp_path: Path) -> None:
    reader, writer = EmbeddedOnlineStore(tmp_path), EmbeddedOnlineStore(tmp_path)
    options = {"key_columns": ["user_id"], "event_time_column": "t"}
    writer.write("users", [{"user_id": 1, "a": 1, "b": 2, "t": T0}], feature_columns=["a", "b"], **options)
    assert reader.read("users", [1], ["b"], ttl=None).values["b"] == [2]
    writer.delete_view("users")
    writer.write("users", [{"user_id": 1, "b": 20, "a": 10, "t": T0}], feature_columns=["b", "a"], **options)
    assert reader.read("users", [1], ["a", "b"], ttl=None).row(0) == {"a": 10, "b": 20}
    writer.close()
    reader.close()


def test_features_added_later_read_as_null_for_older_rows(tmp_path: Path) -> None:
    with EmbeddedOnlineStore(tmp_path) as store:
        options = {"key_columns": ["user_id"], "event_time_column": "t"}
        store.write("users", [{"user_id": 1, "a": 1, "t": T0}], feature_columns=["a"], **options)
        store.write("users", [{"user_id": 2, "b": 2, "a": 3, "t": T0}], feature_columns=["b", "a"], **options)
        result = store.read("users", [1, 2], ["b", "a"], ttl=None)
        assert result.values == {"b": [None, 2], "a": [1, 3]}


def test_a_large_batch_write_is_chunked_and_complete(tmp_path: Path) -> None:
    rows = 120_000
    rng = np.random.default_rng(3)
    table = pa.table(
        {
            "user_id": np.arange(rows),
            "clicks": rng.integers(0, 100, rows),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(rows * 4, dtype=np.float32)), 4),
            "event_time": pa.array(np.full(rows, np.datetime64("2026-03-01T00:00:00", "us"))),
        }
    )
    with EmbeddedOnlineStore(tmp_path, write_chunk_rows=25_000) as store:
        stats = store.write(
            "users",
            table,
            key_columns=["user_id"],
            feature_columns=["clicks", "embedding"],
            event_time_column="event_time",
        )
        assert (stats.rows_received, stats.rows_applied) == (rows, rows)
        assert stats.rows_per_second > 0
        assert store.row_counts() == {"users": rows}
        probe = [0, rows // 2, rows - 1]
        result = store.read("users", probe, ["clicks", "embedding"], ttl=None)
        assert result.values["clicks"] == [table["clicks"][i].as_py() for i in probe]
        for vector, index in zip(result.values["embedding"], probe, strict=True):
            assert vector.tolist() == pytest.approx(table["embedding"][index].as_py())


def test_threads_share_one_store(tmp_path: Path) -> None:
    store = EmbeddedOnlineStore(tmp_path)
    store.write(
        "users",
        pa.table({"user_id": list(range(100)), "clicks": list(range(100)), "t": [T0] * 100}),
        key_columns=["user_id"],
        feature_columns=["clicks"],
        event_time_column="t",
    )
    failures: list[BaseException] = []

    def read_many(offset: int) -> None:
        try:
            for i in range(200):
                key = (i + offset) % 100
                assert store.read("users", [key], ["clicks"], ttl=None).values["clicks"] == [key]
        except BaseException as exc:  # collected for the main thread's assertion
            failures.append(exc)

    threads = [threading.Thread(target=read_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    assert failures == []


def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = EmbeddedOnlineStore(tmp_path)
    store.close()
    with pytest.raises(InvalidInput, match="closed"):
        store.row_counts()


def test_open_online_store_defaults_to_embedded_under_home(tmp_path: Path) -> None:
    store = open_online_store(home=tmp_path)
    assert isinstance(store, EmbeddedOnlineStore)
    assert store.path == tmp_path / "online" / "online.db"
    store.close()
    with pytest.raises(InvalidInput, match="Unknown online store 'memcached://x'"):
        open_online_store("memcached://x", home=tmp_path)
