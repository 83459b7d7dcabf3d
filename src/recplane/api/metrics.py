"""Prometheus metrics of one server: request counts and latency per route, ingestion counters.

Each app gets its own registry (no process-wide globals), exposed at ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    """The server's metric families and the middleware that feeds them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recplane_http_requests_total", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "recplane_http_request_duration_seconds", "HTTP request latency by route.",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.ingested_rows = Counter(
            "recplane_ingest_rows_total", "Rows received by ingestion, by dataset and outcome.",
            ["dataset", "outcome"], registry=self.registry,
        )
        self.ingest_requests = Counter(
            "recplane_ingest_requests_total", "Ingestion requests by dataset and result.",
            ["dataset", "result"], registry=self.registry,
        )

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Time and count every request, labelled by its route template (bounded cardinality)."""
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.latency.labels(path, request.method).observe(time.perf_counter() - started)
            self.requests.labels(path, request.method, str(status)).inc()

    def render(self) -> Response:
        """The /metrics response in the Prometheus text format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
