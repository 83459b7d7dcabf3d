"""Streaming updates: events accepted by ingestion reach the online store within seconds.

Ingestion tells :class:`FeatureStream` which dataset just committed rows. Every feature view reading that
dataset *and already materialized into this online store* is queued; a background thread waits a short
``debounce`` (so a burst of commits becomes one update), then runs an incremental materialization of the queued
views — the same code path as ``recplane features materialize --incremental``, so streamed values are exactly
what a batch run would write (newer-wins in the store, the offline engine's ranking, aggregations recomputed for
the entities whose windows changed). Views never materialized are left alone: the first materialization is an
explicit, possibly large, batch job.

Failures are logged and the views stay queued for the next commit; ingestion itself never waits for or fails
because of feature updates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from recplane.auth import ADMIN
from recplane.features.materialize import Materializer
from recplane.features.registry import FeatureRegistry
from recplane.features.spec import FeatureView

__all__ = ["FeatureStream"]

log = logging.getLogger(__name__)
_VIEWS_CACHE_SECONDS = 5.0


class FeatureStream:
    """Updates, in the background, the materialized views whose source dataset committed rows."""

    def __init__(
        self, registry: FeatureRegistry, materializer: Callable[[], Materializer], *, debounce: float = 0.5
    ) -> None:
        # The materializer (and the online store behind it) is opened only once a commit touches a view's source:
        # a platform that ingests but serves no features never opens a store.
        self._registry, self._materializer, self._debounce = registry, materializer, debounce
        self._pending: set[str] = set()  # datasets that committed rows since the last round
        self._wake = threading.Condition()
        self._closed = False
        self._views_by_source: dict[str, list[str]] = {}
        self._views_read_at = -_VIEWS_CACHE_SECONDS
        self._thread = threading.Thread(target=self._loop, name="recplane-feature-stream", daemon=True)
        self._thread.start()
        self.updates = 0  # materialization rounds run (for tests and metrics)

    def notify(self, dataset: str) -> None:
        """``dataset`` committed new rows. Called on ingestion's writer thread, so it only queues the name: which
        views read it is worked out on the stream's own thread."""
        with self._wake:
            self._pending.add(dataset)
            self._wake.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued, then stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _views_reading(self, dataset: str) -> list[str]:
        now = time.monotonic()
        if now - self._views_read_at > _VIEWS_CACHE_SECONDS:
            by_source: dict[str, list[str]] = {}
            for info in self._registry.list(kind="feature_view"):
                view = info.definition()
                if isinstance(view, FeatureView) and not info.deleted:
                    by_source.setdefault(view.source, []).append(view.name)
            self._views_by_source, self._views_read_at = by_source, now
        return self._views_by_source.get(dataset, [])

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed and not self._pending:
                    return
            if not self._closed:
                time.sleep(self._debounce)  # let a burst of commits land first
            with self._wake:
                datasets, self._pending = sorted(self._pending), set()
            self._update(datasets)

    def _update(self, datasets: list[str]) -> None:
        try:
            candidates = [view for dataset in datasets for view in self._views_reading(dataset)]
            if not candidates:
                return
            materializer = self._materializer()
            views = [view for view in candidates if materializer.watermark(view) is not None]
            if views:
                materializer.materialize(views, principal=ADMIN, incremental=True)
                self.updates += 1
        except Exception:
            log.exception("Streaming feature update after commits to %s failed; retrying on the next commit", datasets)
            with self._wake:
                self._pending.update(datasets)
