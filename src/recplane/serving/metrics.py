"""Prometheus metrics of one recommendation service, served at ``/metrics``.

QPS is ``rate(recplane_serving_requests_total[1m])``; latency per stage (features, retrieval, ranking, rules, and
``queue``: each request's wait in the micro-batch queue) and end to end is labelled with the model versions that
served it, so a new version's latency shows next to the old one's during a swap. Each app gets its own registry
(no process-wide globals).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from recplane.serving.batching import BatchStats

__all__ = ["CONTENT_TYPE_LATEST", "ServingMetrics", "versions_label"]

# Sub-millisecond resolution: the stages of one recommendation are often a fraction of a millisecond.
_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def versions_label(model_versions: Mapping[str, str]) -> str:
    """One label value for a set of model versions: ``retrieval=mf:3,ranking=deepfm:2``."""
    return ",".join(f"{role}={version}" for role, version in sorted(model_versions.items()))


class ServingMetrics:
    """The service's metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "recplane_serving_requests_total", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "recplane_serving_request_duration_seconds",
            "End-to-end request latency by route and the model versions that answered.",
            ["route", "models"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "recplane_serving_stage_duration_seconds",
            "Time per stage of a recommendation (features, retrieval, ranking, rules) and its wait in the micro-batch "
            "queue (queue).",
            ["stage", "models"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "recplane_serving_errors_total", "Failed requests by route and error code.", ["route", "code"], registry=r
        )
        self.batch_size = Histogram(
            "recplane_serving_batch_size",
            "Requests per model call (micro-batching).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "recplane_serving_queue_wait_seconds",
            "How long a group's oldest request waited for a worker thread.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.shed = Counter(
            "recplane_serving_shed_total", "Requests refused with 503 because the service was full.", registry=r
        )
        self.inflight = Gauge("recplane_serving_inflight", "Requests queued or running.", registry=r)
        self.fallbacks = Counter(
            "recplane_serving_fallbacks_total", "Answers served by a fallback, by kind.", ["fallback"], registry=r
        )
        self.swaps = Counter(
            "recplane_serving_swaps_total", "Model swaps by result (ok, failed).", ["result"], registry=r
        )
        self.model_info = Gauge(
            "recplane_serving_model_info",
            "The model version serving each role (value 1).",
            ["role", "model", "version"],
            registry=r,
        )
        self.impressions = Counter(
            "recplane_serving_logged_rows_total",
            "Impression and feedback rows by dataset and outcome (written, dropped, failed).",
            ["dataset", "outcome"],
            registry=r,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def observe_batch(self, stats: BatchStats) -> None:
        """Record one micro-batch (the batcher's statistics hook)."""
        self.batch_size.observe(stats.size)
        self.queue_wait.observe(stats.queue_wait_s)

    def observe_stages(self, stage_ms: Mapping[str, float], models: str) -> None:
        """Record the per-stage timings of one recommendation (milliseconds by stage, ``queue`` included)."""
        for stage, ms in stage_ms.items():
            self._child(self.stage, stage, models).observe(ms / 1000.0)

    def observe_request(self, route: str, status: int, models: str, seconds: float) -> None:
        """Count one answered request and record its end-to-end latency."""
        self._child(self.requests, route, str(status)).inc()
        self._child(self.latency, route, models).observe(seconds)

    def _child(self, family: Any, *labels: str) -> Any:
        """``family.labels(*labels)``, remembered: the lookup costs more than the observation on the hot path."""
        key = (id(family), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def show_models(self, model_versions: Mapping[str, str]) -> None:
        """Point the model-info gauge at the versions now serving (``{"retrieval": "mf:3"}``)."""
        self.model_info.clear()
        for role, version in model_versions.items():
            name, _, number = version.rpartition(":")
            self.model_info.labels(role, name or version, number).set(1)

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
