"""Checksums that prove two writes hold the same events: row count, exact integer sums, distinct values.

Computed a record batch at a time from a ``pyarrow.dataset`` (a folder of Parquet files, or a Delta table's
``to_pyarrow_dataset()``), so a 10M-row table never sits in memory whole. Every component is exact
(integer sums; ``value`` is summed as ``round(value * 2)`` because the synthetic values are multiples of
0.5), so equal checksums do not depend on row order or file layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

__all__ = ["EventChecksum", "checksum_of_dataset", "checksum_of_delta", "checksum_of_table"]

COLUMNS = ["user_id", "item_id", "event_type", "value", "ts"]


@dataclass
class EventChecksum:
    """Order-independent summary of an events table."""

    rows: int = 0
    user_id_sum: int = 0
    item_id_sum: int = 0
    half_value_sum: int = 0
    event_types: list[str] = field(default_factory=list)
    ts_min_us: int | None = None
    ts_max_us: int | None = None

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Fold one batch into the checksum."""
        if batch.num_rows == 0:
            return
        self.rows += batch.num_rows
        self.user_id_sum += _int_sum(batch.column("user_id"))
        self.item_id_sum += _int_sum(batch.column("item_id"))
        doubled = pc.round(pc.multiply(batch.column("value").cast(pa.float64()), 2.0))
        self.half_value_sum += _int_sum(doubled.cast(pa.int64()))
        kinds = set(self.event_types) | set(pc.unique(batch.column("event_type")).to_pylist())
        self.event_types = sorted(k for k in kinds if k is not None)
        ts = batch.column("ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        low, high = pc.min_max(ts).values()
        self.ts_min_us = _fold(min, self.ts_min_us, low.as_py())
        self.ts_max_us = _fold(max, self.ts_max_us, high.as_py())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for rows and for the cache marker)."""
        return asdict(self)

    def differences(self, other: EventChecksum) -> list[str]:
        """Human-readable mismatches against ``other`` (empty when they agree)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key}: {mine[key]} != {theirs[key]}" for key in mine if mine[key] != theirs[key]]


def _int_sum(array: pa.Array | pa.ChunkedArray) -> int:
    total = pc.sum(array.cast(pa.int64())).as_py()
    return int(total or 0)


def _fold(pick: Any, current: int | None, new: int | None) -> int | None:
    if new is None:
        return current
    return new if current is None else pick(current, new)


def checksum_of_dataset(dataset: pads.Dataset) -> EventChecksum:
    """Checksum of every row of a pyarrow dataset."""
    checksum = EventChecksum()
    for batch in dataset.to_batches(columns=COLUMNS):
        checksum.add(batch)
    return checksum


def checksum_of_delta(uri: str) -> EventChecksum:
    """Checksum of the newest version of a Delta table."""
    from deltalake import DeltaTable

    return checksum_of_dataset(DeltaTable(uri).to_pyarrow_dataset())


def checksum_of_table(table: pa.Table) -> EventChecksum:
    """Checksum of an in-memory table."""
    checksum = EventChecksum()
    checksum.add(table.select(COLUMNS))
    return checksum
