"""Turning anything a user can hand to ingestion into chunks of rows: JSON rows or Arrow record batches.

Inputs: a list of dicts, a ``pa.Table``/``RecordBatch``/``RecordBatchReader`` (or anything exporting an Arrow
stream, such as a Polars frame), a pandas DataFrame, raw HTTP bodies (a JSON array, one JSON object, or
NDJSON), and paths: ``.parquet`` files, folders of Parquet files or a Delta table, ``.csv``, ``.jsonl`` /
``.ndjson`` and ``.json``. Files are streamed a chunk at a time, so a 10M-row Parquet file never sits in
memory whole. JSON is parsed with orjson; NDJSON lines that are not JSON become rejected rows
("line N: invalid JSON: ...") instead of failing the request.
"""

from __future__ import annotations

import binascii
import csv
import gzip
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from recplane.errors import InvalidInput, NotFound

__all__ = [
    "BATCH_ROWS",
    "Chunk",
    "IngestSource",
    "Mode",
    "RowChunk",
    "UnparsedRow",
    "iter_record_batches",
    "parse_body",
    "parse_ndjson",
    "read_input",
    "row_json",
]

Mode = Literal["json", "arrow", "text"]
BATCH_ROWS = 65_536
_JSONL_CHUNK_LINES = 65_536
_SUFFIXES = ".parquet, .csv, .csv.gz, .jsonl, .ndjson, .json, a folder of Parquet files or a Delta table"


@dataclass(frozen=True)
class UnparsedRow:
    """A line of NDJSON that is not JSON: it is rejected with ``reason``."""

    reason: str


@dataclass
class RowChunk:
    """JSON-like rows (normally dicts) plus, when known, each row's original text."""

    rows: list[Any]
    offset: int = 0
    lines: list[bytes] | None = None

    def raw_text(self, index: int) -> str:
        """The original text of row ``index`` (its NDJSON line, or the row as JSON)."""
        if self.lines is not None:
            return self.lines[index].decode("utf-8", errors="replace")
        return row_json(self.rows[index])

    def __len__(self) -> int:
        return len(self.rows)


Chunk: TypeAlias = RowChunk | pa.RecordBatch


@dataclass
class IngestSource:
    """An input as a stream of chunks; ``num_rows`` when it is known before reading."""

    chunks: Iterator[Chunk]
    mode: Mode
    num_rows: int | None
    description: str


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return binascii.b2a_base64(bytes(value), newline=False).decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, UnparsedRow):
        return value.reason
    return str(value)


def row_json(row: Any) -> str:
    """A row as JSON text, for dead letters (bytes as base64, unknown objects as text)."""
    try:
        return orjson.dumps(
            row, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        ).decode()
    except TypeError:
        return repr(row)


# Bodies and JSON text


def parse_body(body: bytes | bytearray | memoryview, *, first_line: int = 1, offset: int = 0) -> RowChunk:
    """Parse an HTTP body: a JSON array of objects, one JSON object, or NDJSON (one object per line)."""
    data = bytes(body)
    head = data.lstrip()[:1]
    if not head:
        return RowChunk([], offset)
    if head == b"[":
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(
                f"The body is not a valid JSON array: {exc}. Send a JSON array of objects, or NDJSON "
                "(one JSON object per line) to have bad lines rejected one by one."
            ) from exc
        return RowChunk(value if isinstance(value, list) else [value], offset)
    if head == b"{":
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # several lines: NDJSON
        else:
            return RowChunk([value], offset)
    return parse_ndjson(data, first_line=first_line, offset=offset)


def parse_ndjson(data: bytes, *, first_line: int = 1, offset: int = 0) -> RowChunk:
    """Parse NDJSON; lines that are not JSON become :class:`UnparsedRow` rows (blank lines are skipped)."""
    lines = data.split(b"\n")
    text = [line for line in map(bytes.strip, lines) if line]
    try:
        return RowChunk(list(map(orjson.loads, text)), offset, text)
    except orjson.JSONDecodeError:
        pass
    rows: list[Any] = []
    for number, line in enumerate(map(bytes.strip, lines), start=first_line):
        if not line:
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            rows.append(UnparsedRow(f"line {number}: invalid JSON: {exc}"))
    return RowChunk(rows, offset, text)


# Files


def _parquet_source(path: Path, batch_rows: int) -> IngestSource:
    if path.is_dir() and (path / "_delta_log").is_dir():
        from deltalake import DeltaTable

        dataset = DeltaTable(str(path)).to_pyarrow_dataset()
        what = f"Delta table {path}"
    else:
        try:
            dataset = pads.dataset(str(path), format="parquet")
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInput(f"Cannot read {path} as Parquet: {exc}") from exc
        if not dataset.files:
            raise InvalidInput(f"Folder {path} holds no Parquet files.")
        what = f"Parquet {path}"
    return IngestSource(
        chunks=iter(dataset.to_batches(batch_size=batch_rows)),
        mode="arrow",
        num_rows=dataset.count_rows(),
        description=what,
    )


def _csv_source(path: Path, batch_rows: int) -> IngestSource:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as handle:
        first = handle.readline()
    names = next(csv.reader([first]), [])
    if not names:
        raise InvalidInput(f"{path} is empty; a CSV file needs a header line with the column names.")
    # Read every column as text; validation parses it into the declared types row by row.
    options = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(
            pa.input_stream(str(path), compression="detect"),
            read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 64)),
            convert_options=options,
        )
    except pa.ArrowInvalid as exc:
        raise InvalidInput(f"Cannot read {path} as CSV: {exc}") from exc
    return IngestSource(chunks=_csv_batches(reader, path), mode="text", num_rows=None, description=f"CSV {path}")


def _csv_batches(reader: pacsv.CSVStreamingReader, path: Path) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise InvalidInput(f"{path} is not valid CSV: {exc}") from exc


def _jsonl_chunks(path: Path) -> Iterator[RowChunk]:
    with path.open("rb") as handle:
        line, offset = 1, 0
        while True:
            lines = list(itertools.islice(handle, _JSONL_CHUNK_LINES))
            if not lines:
                return
            chunk = parse_ndjson(b"".join(lines), first_line=line, offset=offset)
            line += len(lines)
            offset += len(chunk)
            yield chunk


def _path_source(path: Path, batch_rows: int) -> IngestSource:
    if not path.exists():
        raise NotFound(f"No file or folder at {path}.")
    name = path.name.lower()
    if path.is_dir() or name.endswith(".parquet"):
        return _parquet_source(path, batch_rows)
    if name.endswith((".csv", ".csv.gz")):
        return _csv_source(path, batch_rows)
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")):
        if name.endswith(".gz"):
            with pa.input_stream(str(path), compression="gzip") as stream:
                return _rows_source(parse_ndjson(stream.read()), f"NDJSON {path}")
        return IngestSource(chunks=_jsonl_chunks(path), mode="json", num_rows=None, description=f"NDJSON {path}")
    if name.endswith(".json"):
        return _rows_source(parse_body(path.read_bytes()), f"JSON {path}")
    raise InvalidInput(f"Cannot tell the format of {path}; ingestion reads {_SUFFIXES}.")


# Any input


def _rows_source(chunk: RowChunk, description: str) -> IngestSource:
    return IngestSource(chunks=iter([chunk]), mode="json", num_rows=len(chunk), description=description)


def _table_source(table: pa.Table, batch_rows: int, description: str) -> IngestSource:
    batches = table.to_batches(max_chunksize=batch_rows) or [pa.RecordBatch.from_pylist([], schema=table.schema)]
    return IngestSource(chunks=iter(batches), mode="arrow", num_rows=table.num_rows, description=description)


def read_input(data: Any, *, batch_rows: int = BATCH_ROWS) -> IngestSource:
    """Any supported input as a stream of chunks (see the module docstring for what is supported)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return _rows_source(parse_body(data), "request body")
    if isinstance(data, RowChunk):
        return _rows_source(data, "rows")
    if isinstance(data, list):
        return _rows_source(RowChunk(data), "rows")
    if isinstance(data, dict):
        return _rows_source(RowChunk([data]), "row")
    if isinstance(data, pa.Table):
        return _table_source(data, batch_rows, "Arrow table")
    if isinstance(data, pa.RecordBatch):
        return IngestSource(iter([data]), "arrow", data.num_rows, "Arrow record batch")
    if isinstance(data, pa.RecordBatchReader):
        return IngestSource(iter(data), "arrow", None, "Arrow stream")
    if isinstance(data, str | Path):
        return _path_source(Path(data), batch_rows)
    if _is_pandas(data):
        try:
            table = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InvalidInput(f"Cannot convert the DataFrame to Arrow: {exc}. Give each column one type.") from exc
        return _table_source(table, batch_rows, "pandas DataFrame")
    if hasattr(data, "__arrow_c_stream__"):
        return IngestSource(iter(pa.RecordBatchReader.from_stream(data)), "arrow", None, type(data).__name__)
    raise InvalidInput(
        f"Cannot ingest a {type(data).__name__}. Give a list of dicts, a pyarrow Table or RecordBatchReader, "
        f"a pandas DataFrame, JSON/NDJSON bytes, or a path ({_SUFFIXES})."
    )


def _is_pandas(data: Any) -> bool:
    module = type(data).__module__
    return module.startswith("pandas") and type(data).__name__ == "DataFrame"


def iter_record_batches(data: Any, *, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Any supported input as Arrow record batches (JSON rows are converted with Arrow's type inference)."""
    source = read_input(data, batch_rows=batch_rows)
    for chunk in source.chunks:
        if isinstance(chunk, pa.RecordBatch):
            yield chunk
            continue
        bad = [row for row in chunk.rows if not isinstance(row, dict)]
        if bad:
            raise InvalidInput(f"{source.description} holds rows that are not JSON objects: {row_json(bad[0])}")
        try:
            yield pa.RecordBatch.from_pylist(chunk.rows)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InvalidInput(f"Cannot convert {source.description} to Arrow: {exc}") from exc
