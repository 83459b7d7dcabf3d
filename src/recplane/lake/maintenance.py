"""Table maintenance: compaction of small files and enforcement of a retention period.

Compaction rewrites many small files into a few large ones as a new version with the same rows; it never
vacuums, so every older version stays readable. Retention deletes the rows whose event time is older than
the spec's ``retention`` and then vacuums the files those rows lived in: after that the deleted data is gone
from disk, and time travel ends for every version older than the retention commit (any file that a commit
had removed — by compaction, rewrite or delete — is deleted at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from recplane.lake.info import MaintenanceResult
from recplane.lake.table import DeltaDataset

__all__ = ["FIRST_TIER_BYTES", "SECOND_TIER_BYTES", "TIER_FAN_IN", "automatic_target", "compact_table", "retain_table"]

# Automatic compaction merges in two tiers so that a row is rewritten a few times at most. Merging every file
# under Delta's 100 MB target instead rewrote its own earlier output on every run: the volume grew with the table.
FIRST_TIER_BYTES = 1024 * 1024
SECOND_TIER_BYTES = 16 * 1024 * 1024
TIER_FAN_IN = 8


def automatic_target(sizes: Sequence[int], *, min_files: int) -> int | None:
    """The target size of the automatic compaction due for data files of these ``sizes`` (None: none is due).

    Fresh files (under half of ``FIRST_TIER_BYTES``, what single commits leave) are merged into files of about
    ``FIRST_TIER_BYTES`` once ``min_files`` of them exist; ``TIER_FAN_IN`` of those are merged into files of about
    ``SECOND_TIER_BYTES``; files past half of that are never merged again automatically (``compact`` still does).
    Delta rewrites every file under the target, so a merge also tops up its own tier's last, partly filled file:
    bounded by the tier's size, not by the table's.
    """
    if min_files <= 0:
        return None
    fresh = merged = 0
    for size in sizes:
        if size < FIRST_TIER_BYTES // 2:
            fresh += 1
        elif size < SECOND_TIER_BYTES // 2:
            merged += 1
    if merged >= TIER_FAN_IN:
        return SECOND_TIER_BYTES
    if fresh >= min_files:
        return FIRST_TIER_BYTES
    return None


def compact_table(
    name: str, table: DeltaDataset, *, author: str, target_size: int | None = None
) -> MaintenanceResult:
    """Merge small files into large ones (non-destructive: older versions stay readable)."""
    before = table.version()
    metrics = table.compact(target_size=target_size, metadata={"author": author})
    after = table.version()
    return MaintenanceResult(
        dataset=name,
        operation="compact",
        version=after,
        files_removed=int(metrics.get("numFilesRemoved", 0)),
        files_added=int(metrics.get("numFilesAdded", 0)),
        details={
            "committed": after != before,
            "files_considered": int(metrics.get("totalConsideredFiles", 0)),
            "files_skipped": int(metrics.get("totalFilesSkipped", 0)),
            "target_size": target_size,
        },
    )


def _timestamp_literal(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _count_older(table: DeltaDataset, event_time: str, cutoff: datetime) -> int:
    dataset = table.refresh().to_pyarrow_dataset()
    column_type = dataset.schema.field(event_time).type
    older = pads.field(event_time) < pa.scalar(cutoff, type=column_type)
    return int(dataset.count_rows(filter=older))


def retain_table(
    name: str,
    table: DeltaDataset,
    *,
    event_time: str,
    retention: timedelta,
    author: str,
    now: datetime | None = None,
) -> MaintenanceResult:
    """Delete rows older than ``now - retention`` and vacuum their files; a no-op when none are that old."""
    moment = now or datetime.now(UTC)
    cutoff = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) - retention
    details: dict[str, Any] = {"cutoff": cutoff.isoformat(), "event_time": event_time}
    if _count_older(table, event_time, cutoff) == 0:
        return MaintenanceResult(
            dataset=name, operation="retention", version=table.version(),
            details={**details, "message": f"No rows older than {cutoff.isoformat()}; nothing to do."},
        )
    metadata = {"author": author, "cutoff": cutoff.isoformat()}
    metrics = table.delete(
        f"\"{event_time}\" < '{_timestamp_literal(cutoff)}'", metadata={"operation": "retention", **metadata}
    )
    delete_version = table.version()
    vacuumed = table.vacuum(metadata={"operation": "vacuum", "readable_from": delete_version, **metadata})
    rows = int(metrics.get("num_deleted_rows", 0))
    return MaintenanceResult(
        dataset=name,
        operation="retention",
        version=table.version(),
        files_removed=int(metrics.get("num_removed_files", 0)),
        files_added=int(metrics.get("num_added_files", 0)),
        rows_removed=rows,
        details={
            **details,
            "delete_version": delete_version,
            "vacuumed_files": len(vacuumed),
            "readable_from": delete_version,
            "message": (
                f"Deleted {rows} row(s) older than {cutoff.isoformat()} and removed {len(vacuumed)} "
                f"unreferenced file(s): versions before {delete_version} can no longer be read."
            ),
        },
    )
