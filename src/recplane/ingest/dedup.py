"""Dedup keys: a row whose key was already committed, or appears earlier in the same commit, is not appended.

Duplicates are not dropped silently: they go to the dead letters with the key and the reason, so a producer
that retried without an idempotency key is visible, and nothing is ever lost. The check runs inside the
dataset's single writer, against the snapshot it is about to commit on top of.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.dataset as pads

from recplane.ingest.validation import dead_letters

__all__ = [
    "ALREADY_COMMITTED",
    "DuplicateSplit",
    "KeySource",
    "deduplicated",
    "duplicate_letters",
    "split_duplicates",
]

ALREADY_COMMITTED = "already in the dataset"
KeySource = tuple[str, pads.Dataset | pa.Table]

_ROW = "__recplane_row"


@dataclass(frozen=True)
class DuplicateSplit:
    """New rows to append, and the positions and reasons of the duplicates among the input rows."""

    unique: pa.Table
    duplicate_rows: list[int]
    reasons: list[str]


def _first_occurrences(keys: pa.Table) -> np.ndarray:
    numbered = keys.append_column(_ROW, pa.array(np.arange(keys.num_rows, dtype=np.int64)))
    firsts = numbered.group_by(keys.column_names, use_threads=False).aggregate([(_ROW, "min")])
    mask = np.zeros(keys.num_rows, dtype=bool)
    mask[firsts[f"{_ROW}_min"].to_numpy()] = True
    return mask


def _present_in(keys: pa.Table, candidates: np.ndarray, existing: pads.Dataset | pa.Table) -> np.ndarray:
    """Rows (among candidates) whose key is present in ``existing``."""
    probe = keys.filter(pa.array(candidates)).append_column(
        _ROW, pa.array(np.flatnonzero(candidates).astype(np.int64))
    )
    on = " AND ".join(f'p."{k}" IS NOT DISTINCT FROM t."{k}"' for k in keys.column_names)
    columns = ", ".join(f'"{k}"' for k in keys.column_names)
    with duckdb.connect() as con:
        con.register("p", probe)
        con.register("t", existing)
        rows = con.sql(
            f"SELECT p.{_ROW} FROM p SEMI JOIN (SELECT {columns} FROM t) AS t ON {on}"
        ).to_arrow_table()
    found = np.zeros(keys.num_rows, dtype=bool)
    found[rows[_ROW].to_numpy()] = True
    return found


def _describe(keys: pa.Table, row: int) -> str:
    return ", ".join(f"{name}={keys.column(name)[row].as_py()!r}" for name in keys.column_names)


def split_duplicates(rows: pa.Table, key: list[str], sources: Sequence[KeySource] = ()) -> DuplicateSplit:
    """Split rows into those to append and duplicates: repeated earlier in ``rows`` or present in a source.

    Each source is ``(label, rows)``; the label says in the reason where the key was found.
    """
    if not key or rows.num_rows == 0:
        return DuplicateSplit(rows, [], [])
    keys = rows.select(key)
    keep = _first_occurrences(keys)
    why = np.full(rows.num_rows, "repeated in the same commit", dtype=object)
    for label, existing in sources:
        found = _present_in(keys, keep, existing)
        why[found] = label
        keep &= ~found
    if keep.all():
        return DuplicateSplit(rows, [], [])
    duplicates = np.flatnonzero(~keep)
    reasons = [f"duplicate dedup key ({_describe(keys, int(i))}): {why[i]}" for i in duplicates]
    return DuplicateSplit(rows.filter(pa.array(keep)), duplicates.tolist(), reasons)


def duplicate_letters(rows: pa.Table, reasons: list[str], batch_id: str) -> pa.Table:
    """Dead-letter rows for duplicates: the row as JSON text and the reason."""
    raw = [orjson.dumps(row, default=str).decode() for row in rows.to_pylist()]
    return dead_letters(raw, reasons, batch_id=batch_id, source="dedup", received_at=datetime.now(UTC))


def deduplicated(
    batches: Iterator[pa.RecordBatch],
    key: list[str],
    existing: pads.Dataset,
    batch_id: str,
    duplicates: list[pa.Table],
) -> Iterator[pa.RecordBatch]:
    """Drop rows whose key is committed or seen earlier in this stream; their dead letters go to ``duplicates``.

    The keys seen so far are kept in memory (key columns only) for the length of one bulk write.
    """
    seen: list[pa.Table] = []
    for batch in batches:
        rows = pa.Table.from_batches([batch])
        sources: list[KeySource] = [(ALREADY_COMMITTED, existing)]
        if seen:
            sources.append(("repeated earlier in this load", pa.concat_tables(seen)))
        split = split_duplicates(rows, key, sources)
        if split.duplicate_rows:
            duplicates.append(duplicate_letters(rows.take(split.duplicate_rows), split.reasons, batch_id))
        seen.append(split.unique.select(key))
        yield from split.unique.to_batches()
