"""Impression and feedback logging: what was served, and what users did with it, as datasets.

With ``logging.impressions`` set in the deployment, every answer of ``/v1/recommend`` and ``/v1/score`` becomes a
row of that dataset (request id, time, user, items, scores, positions, model versions, rules, fallback, the
request context and, with ``logging.log_features``, the feature vectors the ranker saw), and every
``POST /v1/feedback`` a row of the feedback dataset (``<impressions>_feedback`` unless named). Both are created on
first use with the schemas below and join on ``request_id`` (docs/serving.md shows the DuckDB query): tomorrow's
training data and the input of training/serving skew checks.

Logging never slows an answer: the request path only puts the row's parts on a bounded queue (a full queue drops
the row and counts it, ``recplane_serving_logged_rows_total{outcome="dropped"}``); a background thread turns
queued rows into one batch every ``flush_seconds`` (or ``max_rows``) and hands it to the ingestion service,
which group-commits it. :meth:`ImpressionLogger.close` flushes what is queued.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from recplane.auth import ADMIN
from recplane.errors import AlreadyExists, NotFound

if TYPE_CHECKING:
    from recplane.ingest import IngestService
    from recplane.lake import DatasetService
    from recplane.serving.metrics import ServingMetrics

__all__ = ["FEEDBACK_SCHEMA", "IMPRESSION_SCHEMA", "FeedbackEvent", "Impression", "ImpressionLogger"]

log = logging.getLogger(__name__)

IMPRESSION_SCHEMA: dict[str, Any] = {
    "request_id": {"type": "string", "nullable": False, "description": "The id in the response; feedback joins on it."},
    "ts": {"type": "timestamp", "nullable": False, "description": "When the answer was served."},
    "deployment": {"type": "string", "description": "The deployment that answered."},
    "route": {"type": "string", "description": "recommend or score."},
    "user_id": {"type": "string", "description": "The user, as text."},
    "items": {"type": "list<string>", "description": "Item ids in served order, as text."},
    "scores": {"type": "list<float32>", "description": "The score of each item."},
    "positions": {"type": "list<int32>", "description": "The 0-based position of each item."},
    "model_versions": {"type": "map<string, string>", "description": "Role to model:version."},
    "rules": {"type": "list<string>", "description": "Business rules applied."},
    "fallback": {"type": "string", "description": "The fallback that answered (null: the models did)."},
    "context": {"type": "string", "description": "The request context, as JSON."},
    "features": {"type": "string", "description": "Feature vectors the ranker used, as JSON (log_features)."},
}
FEEDBACK_SCHEMA: dict[str, Any] = {
    "request_id": {"type": "string", "nullable": False, "description": "The recommendation this reacts to."},
    "ts": {"type": "timestamp", "nullable": False, "description": "When the event happened."},
    "user_id": {"type": "string", "description": "The user, as text."},
    "item_id": {"type": "string", "nullable": False, "description": "The item acted on, as text."},
    "event": {"type": "string", "nullable": False, "description": "click, rating, purchase, dismiss ..."},
    "value": {"type": "float64", "description": "The event's value (a rating, a dwell time ...)."},
}


@dataclass(frozen=True)
class Impression:
    """One served answer, as the request path hands it over (converted to a row off the request path)."""

    request_id: str
    ts: datetime
    route: str
    user_id: Any
    item_ids: Sequence[Any]
    scores: Sequence[float]
    model_versions: Mapping[str, str]
    rules: Sequence[str]
    fallback: str | None
    context: Mapping[str, Any]
    features: Mapping[str, Any] | None


@dataclass(frozen=True)
class FeedbackEvent:
    """One user reaction to a served item."""

    request_id: str
    item_id: Any
    event: str
    value: float | None
    user_id: Any
    ts: datetime


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()


def impression_rows(rows: Sequence[Impression], deployment: str, log_features: bool) -> list[dict[str, Any]]:
    """Impressions as rows of the impression dataset.

    Rows rather than an Arrow table: ingestion's Arrow path cannot conform ``map`` columns yet (pyarrow has no
    ``list_flatten`` kernel for maps), its JSON-row path can, and this runs off the request path.
    """
    return [
        {
            "request_id": row.request_id,
            "ts": row.ts,
            "deployment": deployment,
            "route": row.route,
            "user_id": _text(row.user_id),
            "items": [str(item) for item in row.item_ids],
            "scores": [float(score) for score in row.scores],
            "positions": list(range(len(row.item_ids))),
            "model_versions": dict(row.model_versions),
            "rules": list(row.rules),
            "fallback": row.fallback,
            "context": _json(dict(row.context)) if row.context else None,
            "features": _json(row.features) if log_features else None,
        }
        for row in rows
    ]


def feedback_rows(rows: Sequence[FeedbackEvent]) -> list[dict[str, Any]]:
    """Feedback events as rows of the feedback dataset."""
    return [
        {
            "request_id": row.request_id,
            "ts": row.ts,
            "user_id": _text(row.user_id),
            "item_id": str(row.item_id),
            "event": row.event,
            "value": row.value,
        }
        for row in rows
    ]


class _DatasetQueue:
    """A bounded queue of rows for one dataset, written by one background thread in groups."""

    def __init__(self, logger: ImpressionLogger, dataset: str, schema: dict[str, Any], description: str) -> None:
        self.logger = logger
        self.dataset = dataset
        self.schema = schema
        self.description = description
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=logger.max_pending)
        self.created = False
        self.thread = threading.Thread(target=self._drain, name=f"recplane-log-{dataset}", daemon=True)
        self.thread.start()

    def put(self, row: Any) -> None:
        try:
            self.queue.put_nowait(row)
        except queue.Full:
            self.logger.count(self.dataset, "dropped", 1)

    def _drain(self) -> None:
        stopping = False
        while not stopping:
            rows, stopping = self._gather()
            if rows:
                self._write(rows)

    def _gather(self) -> tuple[list[Any], bool]:
        """Rows queued within one flush interval (the first one waited for without limit)."""
        first = self.queue.get()
        if first is None:
            return [], True
        rows = [first]
        deadline = time.monotonic() + self.logger.flush_seconds
        while len(rows) < self.logger.max_rows:
            remaining = deadline - time.monotonic()
            try:
                row = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if row is None:
                return rows, True
            rows.append(row)
        return rows, False

    def _write(self, rows: list[Any]) -> None:
        try:
            self._ensure_dataset()
            batch = self.logger.to_rows(self.dataset, rows)
            result = self.logger.ingestion.ingest(self.dataset, batch, principal=ADMIN, source="serving")
            self.logger.count(self.dataset, "written", result.accepted)
            if result.rejected:
                self.logger.count(self.dataset, "failed", result.rejected)
        except Exception:
            log.exception("Logging %d rows to dataset %s failed", len(rows), self.dataset)
            self.logger.count(self.dataset, "failed", len(rows))

    def _ensure_dataset(self) -> None:
        if self.created:
            return
        datasets = self.logger.datasets
        try:
            datasets.get(self.dataset, principal=ADMIN)
        except NotFound:
            spec = {"name": self.dataset, "description": self.description, "event_time": "ts", "columns": self.schema}
            with contextlib.suppress(AlreadyExists):  # another worker process created it first
                datasets.create(spec, principal=ADMIN, author="recplane serve")
        self.created = True

    def close(self, timeout: float) -> None:
        self.queue.put(None)  # blocks only if full, and the drain thread is emptying it
        self.thread.join(timeout)


class ImpressionLogger:
    """Logs served answers and feedback events to their datasets in the background."""

    def __init__(
        self,
        ingestion: IngestService,
        datasets: DatasetService,
        *,
        deployment: str,
        impressions: str,
        feedback: str | None = None,
        log_features: bool = False,
        metrics: ServingMetrics | None = None,
        flush_seconds: float = 0.5,
        max_rows: int = 10_000,
        max_pending: int = 100_000,
    ) -> None:
        self.ingestion = ingestion
        self.datasets = datasets
        self.deployment = deployment
        self.log_features = log_features
        self.metrics = metrics
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self.max_pending = max_pending
        self.impressions_dataset = impressions
        self.feedback_dataset = feedback or f"{impressions}_feedback"
        self._impressions = _DatasetQueue(
            self, impressions, IMPRESSION_SCHEMA, f"Answers served by deployment {deployment} (recplane serve)."
        )
        self._feedback = _DatasetQueue(
            self,
            self.feedback_dataset,
            FEEDBACK_SCHEMA,
            f"Feedback on deployment {deployment}'s answers; joins {impressions} on request_id.",
        )

    def log(self, impression: Impression) -> None:
        """Queue one served answer (never blocks; dropped and counted when the queue is full)."""
        self._impressions.put(impression)

    def feedback(self, event: FeedbackEvent) -> None:
        """Queue one feedback event (never blocks; dropped and counted when the queue is full)."""
        self._feedback.put(event)

    def to_rows(self, dataset: str, queued: Sequence[Any]) -> list[dict[str, Any]]:
        """The dataset rows for queued impressions or feedback events of ``dataset``."""
        if dataset == self.impressions_dataset:
            return impression_rows(queued, self.deployment, self.log_features)
        return feedback_rows(queued)

    def count(self, dataset: str, outcome: str, rows: int) -> None:
        """Add to the logged-rows metric."""
        if self.metrics is not None and rows:
            self.metrics.impressions.labels(dataset, outcome).inc(rows)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the background threads."""
        self._impressions.close(timeout)
        self._feedback.close(timeout)


def now_utc() -> datetime:
    """The current time, timezone-aware (what the logged ``ts`` columns hold)."""
    return datetime.now(UTC)
