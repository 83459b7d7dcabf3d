"""The online store's contract: what every backend (embedded SQLite, Redis) promises its callers.

An online store keeps, for each feature view and entity key, the latest row of feature values so that
serving can look them up in microseconds. Its rules, identical on every backend (the contract tests run one
test body against each):

- **Newer wins.** A written row replaces the stored one only if its ``(event_time, created_time)`` is
  greater: event time first, created time breaking ties — the rule the offline engine uses to pick a
  value at equal event times, so training and serving agree on the same row. A missing created time counts
  as the earliest possible. On a complete tie the stored row stays (re-writing the same data is a no-op).
  Re-materialising an older window therefore never overwrites newer values.
- **A row is one unit.** Writing a row replaces all of the entity's values for that view; features the
  write does not carry read back as null.
- **Reads never guess.** Each entity comes back ``ok`` (values and their event time), ``expired`` (its event
  time is older than ``now - ttl``: values are withheld as null, unlike feast#6821) or ``missing`` (no row:
  null values, not an error). A feature name the view was never written with is an ``InvalidInput``
  naming it; a view never written is ``NotFound``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import pyarrow as pa

__all__ = ["EntityKey", "EntityStatus", "OnlineResult", "OnlineRow", "OnlineStore", "WriteStats"]

EntityStatus: TypeAlias = Literal["ok", "expired", "missing"]
EntityKey: TypeAlias = tuple[Any, ...] | int | str | bytes
OnlineRow: TypeAlias = Mapping[str, Any]
"""One row to write, as ``{column: value}``; ``key_columns`` etc. name which columns play which role."""


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What one ``write`` did: rows received, rows that replaced (or created) a stored row, and time taken."""

    view: str
    rows_received: int
    rows_applied: int
    seconds: float

    @property
    def rows_ignored(self) -> int:
        """Rows not applied because the store already held a row at least as new."""
        return self.rows_received - self.rows_applied

    @property
    def rows_per_second(self) -> float:
        """Write throughput of this call."""
        return self.rows_received / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class OnlineResult:
    """Feature values of several entities of one view, in the order the keys were asked for (columnar)."""

    view: str
    features: tuple[str, ...]
    keys: list[EntityKey]
    values: dict[str, list[Any]]
    """One list per feature, aligned with ``keys``; null where the entity is expired or missing."""
    event_times: list[datetime | None]
    """Event time (UTC) of each entity's row — the freshness of its values; null when missing."""
    statuses: list[EntityStatus]

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, index: int) -> dict[str, Any]:
        """The values of the ``index``-th entity as ``{feature: value}``."""
        return {name: self.values[name][index] for name in self.features}

    def to_pylist(self) -> list[dict[str, Any]]:
        """One dict per entity: ``key``, ``status``, ``event_time`` and ``values`` (for JSON answers)."""
        return [
            {"key": key, "status": status, "event_time": event_time, "values": self.row(index)}
            for index, (key, status, event_time) in enumerate(
                zip(self.keys, self.statuses, self.event_times, strict=True)
            )
        ]


@runtime_checkable
class OnlineStore(Protocol):
    """Latest feature rows per (view, entity key); newer-wins writes and TTL-aware reads."""

    def write(
        self,
        view: str,
        rows: pa.Table | Sequence[OnlineRow],
        *,
        key_columns: Sequence[str],
        feature_columns: Sequence[str],
        event_time_column: str,
        created_time_column: str | None = None,
    ) -> WriteStats:
        """Upsert rows, keeping per entity the row with the greatest (event time, created time)."""
        ...

    def read(
        self,
        view: str,
        keys: Sequence[EntityKey],
        features: Sequence[str],
        *,
        ttl: timedelta | None,
        now: datetime | None = None,
    ) -> OnlineResult:
        """Values, event times and a status for each key (``ok``, ``expired`` or ``missing``)."""
        ...

    def delete_view(self, view: str) -> None:
        """Forget every row and the schema record of a view (no-op for an unknown view)."""
        ...

    def row_counts(self) -> dict[str, int]:
        """Number of entity rows stored per view."""
        ...

    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""
        ...
