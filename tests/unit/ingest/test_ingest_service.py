"""The ingestion service end to end: every input format, dead letters, schema changes, the public face."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import recplane.ingest
from recplane.auth import ADMIN
from recplane.errors import InvalidInput
from recplane.lake import load_spec

from .conftest import EVENTS_SPEC, Home, event_rows

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def typed_rows(count: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(range(start, start + count), pa.int64()),
            "rating": pa.array([2.0] * count, pa.float64()),
            "ts": pa.array([T0] * count, pa.timestamp("ns", tz="UTC")),
        }
    )


def test_every_input_format_lands_in_the_dataset(home: Home, tmp_path: Path) -> None:
    service = home.ingestion()
    pq.write_table(typed_rows(3, 100), tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text('user_id,rating,ts,tags\n200,1.5,2026-01-01T00:00:00Z,"[""x""]"\n201,,,\n')
    (tmp_path / "c.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in event_rows(2, start=300)))
    (tmp_path / "d.json").write_bytes(orjson.dumps(event_rows(2, start=400)))
    inputs = [
        event_rows(2, start=0),
        typed_rows(2, 10),
        typed_rows(2, 20).to_reader(),
        typed_rows(2, 30).to_pandas(),
        orjson.dumps(event_rows(2, start=40)),
        b"\n".join(orjson.dumps(r) for r in event_rows(2, start=50)),
        tmp_path / "a.parquet",
        str(tmp_path / "b.csv"),
        tmp_path / "c.jsonl",
        tmp_path / "d.json",
    ]
    for data in inputs:
        result = service.ingest("events", data, principal=ADMIN)
        assert result.rejected == 0, (type(data), result.reasons)
    ids = sorted(home.rows().column("user_id").to_pylist())
    assert ids == [0, 1, 10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 100, 101, 102, 200, 201, 300, 301, 400, 401]
    csv_row = next(r for r in home.rows().to_pylist() if r["user_id"] == 200)
    assert csv_row["tags"] == ["x"] and csv_row["ts"] == T0 and csv_row["rating"] == 1.5


def test_dead_letters_keep_the_raw_row_reason_batch_and_source(home: Home) -> None:
    service = home.ingestion()
    body = b'{"user_id": 1}\n{"user_id": "one"}\n{"user_id": 2, "colour": "red"}\nnot json\n'
    result = service.ingest("events", body, principal=ADMIN, batch_id="dl", source="http")
    assert (result.accepted, result.rejected) == (1, 3)
    assert [r.row for r in result.reasons] == [1, 2, 3]
    dead = home.rows("events__rejected").to_pylist()
    assert [d["raw"] for d in dead] == ['{"user_id": "one"}', '{"user_id": 2, "colour": "red"}', "not json"]
    assert dead[0]["reason"] == "column 'user_id': value 'one' is not int64"
    assert dead[1]["reason"].startswith("unknown column 'colour' (columns are user_id, item_id, rating, ts, tags)")
    assert dead[2]["reason"].startswith("line 4: invalid JSON:")
    assert {d["batch_id"] for d in dead} == {"dl"} and {d["source"] for d in dead} == {"http"}
    assert result.rejected_version is not None


def test_a_bulk_parquet_file_streams_into_one_commit_with_its_rejects(home: Home, tmp_path: Path) -> None:
    table = typed_rows(20_000)
    ids = table.column("user_id").to_pylist()
    ids[7] = None
    table = table.set_column(0, "user_id", pa.array(ids, pa.int64()))
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=3_000)
    service = home.ingestion(group_commit_max_rows=5_000)
    result = service.ingest("events", tmp_path / "big.parquet", principal=ADMIN, batch_id="bulk")
    assert (result.accepted, result.rejected) == (19_999, 1)
    assert len(home.commits()) == 1
    assert home.rows(version=result.version).num_rows == 19_999
    assert orjson.loads(home.rows("events__rejected").column("raw")[0].as_py())["user_id"] is None
    again = service.ingest("events", tmp_path / "big.parquet", principal=ADMIN, batch_id="bulk")
    assert again.duplicate and again.accepted == 19_999


def test_a_typed_input_with_an_unknown_column_is_refused_before_anything_is_written(home: Home) -> None:
    service = home.ingestion(group_commit_max_rows=10)
    table = typed_rows(50).append_column("colour", pa.array(["red"] * 50))
    with pytest.raises(InvalidInput, match="Unknown column"):
        service.ingest("events", table, principal=ADMIN)
    with pytest.raises(InvalidInput, match="Unknown column"):
        service.ingest("events", table.slice(0, 5), principal=ADMIN)
    assert home.commits() == []


def test_rows_follow_the_spec_after_a_column_is_added(home: Home) -> None:
    service = home.ingestion()
    service.ingest("events", event_rows(1), principal=ADMIN)
    wider = {**EVENTS_SPEC, "columns": {**EVENTS_SPEC["columns"], "country": "string"}}
    home.datasets.apply(load_spec(wider), principal=ADMIN)
    result = service.ingest("events", [{"user_id": 5, "country": "NL"}], principal=ADMIN)
    assert result.accepted == 1
    rows = home.rows().to_pylist()
    assert sorted((r["user_id"], r["country"]) for r in rows) == [(0, None), (5, "NL")]


def test_pandas_timestamps_and_nullable_ints_are_understood(home: Home) -> None:
    frame = pd.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": pd.array([5, None], dtype="Int64"),
            "ts": pd.to_datetime(pd.Series(["2026-01-01", None])),
        }
    )
    result = home.ingestion().ingest("events", frame, principal=ADMIN)
    assert result.accepted == 2
    assert home.rows().to_pylist()[0]["ts"] == T0


def test_public_api_is_pinned() -> None:
    assert sorted(recplane.ingest.__all__) == [
        "BatchLedger",
        "CommitOutcome",
        "DEAD_LETTER_SCHEMA",
        "DatasetAccess",
        "IngestResult",
        "IngestService",
        "RejectedRow",
        "StreamStats",
        "TableWriter",
        "Validated",
        "Validator",
        "consume_stream",
        "consume_stream_async",
        "dead_letters",
        "iter_record_batches",
        "parse_body",
        "read_input",
        "stream_app_id",
    ]
