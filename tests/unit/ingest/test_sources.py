"""Every input format becomes chunks of rows; files stream a chunk at a time."""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recplane.errors import InvalidInput, NotFound
from recplane.ingest import iter_record_batches, parse_body, read_input
from recplane.ingest.sources import RowChunk, UnparsedRow

ROWS = [{"user_id": 1, "rating": 2.5}, {"user_id": 2, "rating": None}]


def rows_of(data: object, **kwargs: object) -> list[dict[str, object]]:
    """All rows of an input, whatever chunks it came in."""
    out: list[dict[str, object]] = []
    for chunk in read_input(data, **kwargs).chunks:  # type: ignore[arg-type]
        out.extend(chunk.rows if isinstance(chunk, RowChunk) else chunk.to_pylist())
    return out


def test_python_and_arrow_inputs_give_the_same_rows() -> None:
    table = pa.Table.from_pylist(ROWS)
    inputs = [ROWS, table, table.to_reader(), table.to_batches()[0], pd.DataFrame(ROWS)]
    for data in inputs:
        assert rows_of(data) == ROWS, type(data)


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        (orjson.dumps(ROWS), ROWS),
        (b"\n".join(orjson.dumps(r) for r in ROWS) + b"\n", ROWS),
        (b'  {"user_id": 1,\n "rating": 2.5}\n', ROWS[:1]),
        (b'\r\n{"user_id": 1, "rating": 2.5}\r\n\r\n', ROWS[:1]),
        (b"", []),
    ],
)
def test_bodies_are_json_arrays_single_objects_or_ndjson(body: bytes, rows: list[dict[str, object]]) -> None:
    assert parse_body(body).rows == rows


def test_unparseable_ndjson_lines_become_rejections_with_their_line_number() -> None:
    chunk = parse_body(b'{"a": 1}\n\n{"a": \n{"a": 3}\n')
    assert chunk.rows[0] == {"a": 1}
    assert isinstance(chunk.rows[1], UnparsedRow)
    assert chunk.rows[1].reason.startswith("line 3: invalid JSON:")
    assert chunk.rows[2] == {"a": 3}
    assert chunk.raw_text(1) == '{"a":'


def test_a_broken_json_array_body_is_refused_as_a_whole() -> None:
    with pytest.raises(InvalidInput, match="not a valid JSON array"):
        parse_body(b'[{"a": 1},')


def test_files_of_every_format_are_read(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, tmp_path / "rows.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(table.slice(0, 1), folder / "a.parquet")
    pq.write_table(table.slice(1), folder / "b.parquet")
    (tmp_path / "rows.csv").write_text("user_id,rating\n1,2.5\n2,\n")
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in ROWS))
    (tmp_path / "rows.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in ROWS))
    (tmp_path / "rows.json").write_bytes(orjson.dumps(ROWS))
    for name in ("rows.parquet", "parts", "rows.jsonl", "rows.ndjson", "rows.json"):
        assert rows_of(tmp_path / name) == ROWS, name
    assert read_input(tmp_path / "rows.csv").mode == "text"
    assert rows_of(tmp_path / "rows.csv") == [{"user_id": "1", "rating": "2.5"}, {"user_id": "2", "rating": ""}]


def test_a_large_parquet_file_streams_in_bounded_batches(tmp_path: Path) -> None:
    table = pa.table({"user_id": pa.array(range(50_000), pa.int64())})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=10_000)
    source = read_input(tmp_path / "big.parquet", batch_rows=4_096)
    assert source.num_rows == 50_000
    sizes = [chunk.num_rows for chunk in source.chunks]  # type: ignore[union-attr]
    assert sum(sizes) == 50_000
    assert max(sizes) <= 4_096


def test_jsonl_files_stream_in_chunks_that_keep_row_positions(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({"user_id": i}) for i in range(70_000)))
    chunks = list(read_input(path).chunks)
    assert len(chunks) == 2
    assert [c.offset for c in chunks] == [0, 65_536]


def test_unknown_inputs_and_missing_files_say_what_is_supported(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="Cannot ingest a int"):
        read_input(42)
    with pytest.raises(NotFound):
        read_input(tmp_path / "nope.parquet")
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(InvalidInput, match=r"\.parquet, \.csv"):
        read_input(tmp_path / "rows.txt")


def test_iter_record_batches_gives_arrow_for_any_input(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in ROWS))
    for data in (pa.Table.from_pylist(ROWS), tmp_path / "rows.jsonl"):
        batches = list(iter_record_batches(data))
        assert pa.Table.from_batches(batches).to_pylist() == ROWS
