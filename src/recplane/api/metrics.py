"""Prometheus metrics of one server: request counts and latency per route, ingestion counters, feature skew.

Each app gets its own registry (no process-wide globals), exposed at ``/metrics``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from recplane.features.skew import SkewReport

__all__ = ["MetricsMiddleware", "ServerMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    """The server's metric families."""

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
        self.feature_skew_mismatch_rate = Gauge(
            "recplane_feature_skew_mismatch_rate",
            "Share of served values that differ from the offline engine's, per feature (latest skew report).",
            ["feature"], registry=self.registry,
        )
        self.feature_skew_rows_compared = Gauge(
            "recplane_feature_skew_rows_compared",
            "Served values compared with the offline engine's, per feature (latest skew report).",
            ["feature"], registry=self.registry,
        )

    def record_feature_skew(self, report: SkewReport) -> None:
        """Set the skew gauges of every feature in ``report`` (features it does not cover keep their values)."""
        for row in report.features:
            self.feature_skew_mismatch_rate.labels(row.feature).set(row.mismatch_rate)
            self.feature_skew_rows_compared.labels(row.feature).set(row.rows_compared)

    def render(self) -> Response:
        """The /metrics response in the Prometheus text format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Times and counts every HTTP request by route template (bounded label cardinality).

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` wraps every body in extra tasks and queues,
    which cost a quarter of the ingestion route's CPU when measured.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.latency.labels(path, method).observe(time.perf_counter() - started)
            self.metrics.requests.labels(path, method, str(status)).inc()
