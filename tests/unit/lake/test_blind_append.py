"""Blind appends: small appends to local tables commit without delta-rs, and every Delta reader still agrees."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import SchemaMismatchError

from recplane.lake.blind_append import AppendPlan, file_stats
from recplane.lake.table import DeltaDataset

SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("value", pa.float32()),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("tags", pa.list_(pa.string())),
    ]
)
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds


def rows(count: int, start: int = 0) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.int64()),
            pa.array(["click" if i % 2 else "view" for i in ids]),
            pa.array([i / 2 for i in ids], pa.float32()),
            pa.array([T0 + i * 1_000_001 for i in ids], pa.int64()).cast(SCHEMA.field("ts").type),
            pa.array([[f"t{i}"] for i in ids], pa.list_(pa.string())),
        ],
        schema=SCHEMA,
    )


def engines(uri: str) -> list[str]:
    """Each commit's writer, oldest first."""
    return [entry.get("engineInfo", "") for entry in reversed(DeltaTable(uri).history())]


@pytest.fixture
def table(tmp_path: Path) -> DeltaDataset:
    return DeltaDataset.create(str(tmp_path / "events"), SCHEMA)


def test_appends_commit_one_version_each_and_every_reader_sees_the_rows(table: DeltaDataset) -> None:
    versions = [table.append(rows(10, start=10 * i), metadata={"batch_ids": [f"b{i}"]}) for i in range(3)]
    assert versions == [1, 2, 3]
    assert engines(table.uri)[1:] == ["recplane blind append"] * 3
    fresh = DeltaTable(table.uri)
    assert fresh.version() == 3
    assert sorted(fresh.to_pyarrow_table()["user_id"].to_pylist()) == list(range(30))
    with duckdb.connect() as con:
        con.register("events", fresh.to_pyarrow_dataset())
        assert con.sql("SELECT count(*), sum(user_id) FROM events").fetchall() == [(30, sum(range(30)))]
    assert table.read(version=2).num_rows == 20
    assert table.read(version=2).schema.equals(SCHEMA)
    assert table.history()[0]["recplane.batch_ids"] == ["b2"]


def test_statistics_let_readers_skip_files(table: DeltaDataset) -> None:
    table.append(rows(10))
    table.append(rows(10, start=100))
    actions = pa.table(DeltaTable(table.uri).get_add_actions(flatten=True)).sort_by("min.user_id")
    assert actions["num_records"].to_pylist() == [10, 10]
    assert actions["min.user_id"].to_pylist() == [0, 100]
    assert actions["max.user_id"].to_pylist() == [9, 109]
    assert actions["null_count.value"].to_pylist() == [0, 0]
    dataset = DeltaTable(table.uri).to_pyarrow_dataset()
    assert dataset.to_table(filter=pc.field("user_id") >= 100).num_rows == 10
    assert dataset.to_table(filter=pc.field("ts") > pa.scalar(T0 + 109_000_109, SCHEMA.field("ts").type)).num_rows == 0
    assert dataset.to_table(filter=pc.field("ts") >= pa.scalar(T0 + 109_000_109, SCHEMA.field("ts").type)).num_rows == 1


def test_file_statistics_are_exact_or_safely_wider() -> None:
    data = pa.table(
        {
            "ts": pa.array([T0 + 1, T0 + 5_999_999], pa.timestamp("us", tz="UTC")),
            "f": pa.array([1.5, float("nan")]),
            "g": pa.array([float("-inf"), 2.0]),
            "long": pa.array(["a" * 40, "b" * 40]),
            "none": pa.array([None, None], pa.int64()),
            "raw": pa.array([b"x", None]),
        }
    )
    stats = json.loads(file_stats(data, data.column_names))
    assert stats["numRecords"] == 2
    assert stats["minValues"]["ts"] == "2026-01-01T00:00:00.000Z"  # rounded down
    assert stats["maxValues"]["ts"] == "2026-01-01T00:00:06.000Z"  # rounded up, never below the data
    assert stats["minValues"]["f"] == stats["maxValues"]["f"] == 1.5  # NaN is ignored, as by delta-rs
    assert "g" not in stats["minValues"] and "g" not in stats["maxValues"]
    assert stats["minValues"]["long"] == "a" * 32 and "long" not in stats["maxValues"]
    assert stats["nullCount"]["none"] == 2 and "none" not in stats["minValues"]
    assert "raw" not in stats["nullCount"]


def test_a_writer_with_a_stale_snapshot_commits_after_the_others(table: DeltaDataset) -> None:
    table.append(rows(5))
    write_deltalake(table.uri, rows(5, start=5), mode="append")  # another writer: version 2
    write_deltalake(table.uri, rows(5, start=10), mode="append")  # version 3
    assert table.append(rows(5, start=15)) == 4
    assert engines(table.uri)[1:] == ["recplane blind append", "delta-rs:py-1.6.6", "delta-rs:py-1.6.6",
                                      "recplane blind append"]
    assert sorted(DeltaTable(table.uri).to_pyarrow_table()["user_id"].to_pylist()) == list(range(20))


def test_a_concurrent_schema_change_sends_the_append_through_delta_rs(table: DeltaDataset) -> None:
    table.append(rows(5))
    DeltaDataset(table.uri).add_columns([pa.field("country", pa.string())])  # another handle: version 2
    with pytest.raises(SchemaMismatchError):  # delta-rs's answer; the ingestion writer retries with merge
        table.append(rows(5, start=5))
    assert len(list(Path(table.uri).glob("*.parquet"))) == 1  # the abandoned blind-append file was removed
    assert table.append(rows(5, start=5), schema_mode="merge") == 3
    assert engines(table.uri)[-1] != "recplane blind append"
    result = DeltaTable(table.uri).to_pyarrow_table()
    assert result.num_rows == 10 and result["country"].null_count == 10


def test_stream_positions_travel_in_the_same_commit(table: DeltaDataset) -> None:
    table.append(rows(3), app_transactions=[Transaction(app_id="consumer-a", version=41)])
    table.append(rows(3, start=3), app_transactions=[Transaction(app_id="consumer-a", version=42)])
    assert DeltaTable(table.uri).transaction_version("consumer-a") == 42


def test_checkpoints_are_written_every_interval(tmp_path: Path) -> None:
    uri = str(tmp_path / "events")
    write_deltalake(uri, SCHEMA.empty_table(), mode="error", configuration={"delta.checkpointInterval": "3"})
    table = DeltaDataset(uri)
    for i in range(4):
        table.append(rows(2, start=2 * i))
    checkpoint = Path(uri) / "_delta_log" / f"{3:020d}.checkpoint.parquet"
    deadline = time.monotonic() + 30
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists()
    assert json.loads((Path(uri) / "_delta_log" / "_last_checkpoint").read_text())["version"] == 3
    assert DeltaTable(uri).to_pyarrow_table().num_rows == 8


def test_compaction_and_vacuum_after_blind_appends(table: DeltaDataset) -> None:
    for i in range(4):
        table.append(rows(5, start=5 * i))
    metrics = table.compact()
    assert (metrics["numFilesRemoved"], metrics["numFilesAdded"]) == (4, 1)
    removed = table.vacuum()
    assert len(removed) == 4
    assert sorted(table.read()["user_id"].to_pylist()) == list(range(20))
    assert table.append(rows(5, start=20)) == table.version()
    assert table.read().num_rows == 25


def test_tables_and_data_it_cannot_write_go_through_delta_rs(tmp_path: Path) -> None:
    partitioned = DeltaDataset.create(str(tmp_path / "by_type"), SCHEMA, partition_by=["event_type"])
    assert AppendPlan.of(partitioned.table) is None
    partitioned.append(rows(4))
    assert engines(partitioned.uri)[-1] != "recplane blind append"
    plain = DeltaDataset.create(str(tmp_path / "plain"), SCHEMA)
    plan = AppendPlan.of(plain.table)
    assert plan is not None and plan.accepts(rows(2))
    with_nulls = rows(2).set_column(0, "user_id", pa.array([1, None], pa.int64()))
    assert not plan.accepts(with_nulls)  # delta-rs refuses it with its own error
    assert not plan.accepts(rows(2).drop_columns(["tags"]))


def test_appended_timestamps_read_back_exactly(table: DeltaDataset) -> None:
    moment = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
    data = rows(1).set_column(3, "ts", pa.array([moment], SCHEMA.field("ts").type))
    table.append(data)
    assert DeltaTable(table.uri).to_pyarrow_table()["ts"].to_pylist() == [moment]
