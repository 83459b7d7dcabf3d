"""Streaming updates: events accepted by ingestion reach the online store within seconds.

Ingestion tells :class:`FeatureStream` which dataset just committed rows, and at which version. Every feature
view reading that dataset, *already materialized into this online store* from an older version of it, is queued
(a materialization that already read the commit needs no update); a background thread waits a short
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
        self._pending: dict[str, int] = {}  # dataset -> newest committed version since the last round
        self._wake = threading.Condition()
        self._closed = False
        self._views_by_source: dict[str, list[str]] = {}
        self._views_read_at = -_VIEWS_CACHE_SECONDS
        self._thread = threading.Thread(target=self._loop, name="recplane-feature-stream", daemon=True)
        self._thread.start()
        self.updates = 0  # materialization rounds run (for tests and metrics)

    def notify(self, dataset: str, version: int) -> None:
        """``dataset`` committed new rows as ``version``. Called on ingestion's writer thread, so it only queues:
        which views read it is worked out on the stream's own thread."""
        with self._wake:
            self._pending[dataset] = max(version, self._pending.get(dataset, version))
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
                committed, self._pending = self._pending, {}
            self._update(committed)

    def _update(self, committed: dict[str, int]) -> None:
        try:
            candidates = [
                (view, version) for dataset, version in committed.items() for view in self._views_reading(dataset)
            ]
            if not candidates:
                return
            materializer = self._materializer()
            views = [
                view for view, version in candidates if _behind(materializer.materialized_source_version(view), version)
            ]
            if views:
                materializer.materialize(views, principal=ADMIN, incremental=True)
                self.updates += 1
        except Exception:
            log.exception("Streaming feature update after commits to %s failed; retrying on the next commit", committed)
            with self._wake:
                for dataset, version in committed.items():
                    self._pending[dataset] = max(version, self._pending.get(dataset, version))


def _behind(materialized: int | None, committed: int) -> bool:
    """A view needs the commit when it was materialized (never: leave it to an explicit batch run) from an
    older version of its source than the committed one."""
    return materialized is not None and materialized < committed
