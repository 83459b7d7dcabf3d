"""The ingestion ledger: committed batch ids in the catalog, so a retried batch is answered, not re-appended.

It runs once per group commit, on the writer's thread, so it talks to the database through plain SQLAlchemy
Core connections: an ORM session costs more than the Delta commit it follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from recplane.catalog import Catalog, IngestBatch

__all__ = ["BatchLedger", "CommitOutcome", "LedgerEntry"]


@dataclass(frozen=True)
class CommitOutcome:
    """Where one batch landed. ``version`` is None when it had no accepted rows."""

    batch_id: str
    accepted: int
    rejected: int
    version: int | None
    rejected_version: int | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded batch: the catalog's IngestBatch row."""

    batch_id: str
    delta_version: int
    accepted: int
    rejected: int

    def outcome(self) -> CommitOutcome:
        """The answer to a retry of this batch."""
        version = self.delta_version if self.accepted else None
        return CommitOutcome(self.batch_id, self.accepted, self.rejected, version, None, duplicate=True)


class BatchLedger:
    """The catalog's record of committed ingestion batches (the idempotency keys)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        # Built once: SQLAlchemy memoises a statement's cache key on the object, so reusing it skips rebuilding
        # and re-keying the query on every group commit.
        self._lookup = select(
            IngestBatch.batch_id, IngestBatch.delta_version, IngestBatch.accepted, IngestBatch.rejected
        ).where(IngestBatch.dataset == bindparam("dataset"), IngestBatch.batch_id.in_(bindparam("ids", expanding=True)))
        insert: Any = postgresql.insert if catalog.engine.dialect.name == "postgresql" else sqlite.insert
        self._insert = insert(IngestBatch).on_conflict_do_nothing(index_elements=["dataset", "batch_id"])

    def lookup(self, dataset: str, batch_ids: list[str]) -> dict[str, LedgerEntry]:
        """The recorded entries among ``batch_ids``."""
        if not batch_ids:
            return {}
        with self._catalog.engine.connect() as connection:
            rows = connection.execute(self._lookup, {"dataset": dataset, "ids": batch_ids}).all()
        return {row[0]: LedgerEntry(row[0], row[1], row[2], row[3]) for row in rows}

    def newest_version(self, dataset: str) -> int | None:
        """The newest Delta version any recorded batch of ``dataset`` went into."""
        query = select(func.max(IngestBatch.delta_version)).where(IngestBatch.dataset == dataset)
        with self._catalog.session() as session:
            return session.scalar(query)

    def record(self, dataset: str, entries: list[LedgerEntry]) -> None:
        """Record entries; ones recorded already (by a reconcile or another process) are left as they are."""
        if not entries:
            return
        values = [
            {
                "dataset": dataset,
                "batch_id": e.batch_id,
                "delta_version": e.delta_version,
                "accepted": e.accepted,
                "rejected": e.rejected,
            }
            for e in entries
        ]
        with self._catalog.engine.begin() as connection:
            connection.execute(self._insert, values)
