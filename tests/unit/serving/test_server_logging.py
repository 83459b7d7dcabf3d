"""Impression and feedback logging: rows land in datasets created on first use, and join on request_id."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from recplane.auth import ADMIN
from recplane.config import Settings
from recplane.runtime import Runtime
from recplane.serving.impressions import FeedbackEvent, Impression, ImpressionLogger
from recplane.serving.metrics import ServingMetrics


def _impression(request_id: str, user: object, items: list[object]) -> Impression:
    return Impression(
        request_id=request_id,
        ts=datetime.now(UTC),
        route="recommend",
        user_id=user,
        item_ids=items,
        scores=[1.0 / (position + 1) for position in range(len(items))],
        model_versions={"retrieval": "mf:3"},
        rules=["exclude_seen"],
        fallback=None,
        context={"device": "phone"},
        features={"age": [31, 31]},
    )


def test_impressions_and_feedback_are_written_and_join_on_request_id(settings: Settings) -> None:
    metrics = ServingMetrics()
    with Runtime(settings) as runtime:
        logger = ImpressionLogger(
            runtime.ingestion,
            runtime.datasets,
            deployment="home",
            impressions="served",
            log_features=True,
            metrics=metrics,
            flush_seconds=0.05,
        )
        logger.log(_impression("r1", 7, [10, 11, 12]))
        logger.log(_impression("r2", "anna", ["x"]))
        logger.feedback(FeedbackEvent("r1", 11, "click", None, 7, datetime.now(UTC)))
        logger.feedback(FeedbackEvent("r1", 12, "rating", 4.5, 7, datetime.now(UTC)))
        logger.close()

        served = runtime.datasets.read("served", principal=ADMIN)
        feedback = runtime.datasets.read("served_feedback", principal=ADMIN)
    impressions = served.to_pandas()

    assert sorted(impressions["request_id"]) == ["r1", "r2"]
    first = impressions.set_index("request_id").loc["r1"]
    assert list(first["items"]) == ["10", "11", "12"] and list(first["positions"]) == [0, 1, 2]
    assert dict(first["model_versions"]) == {"retrieval": "mf:3"}
    assert first["deployment"] == "home" and first["features"] == '{"age":[31,31]}'
    assert first["context"] == '{"device":"phone"}'

    db = duckdb.connect()
    db.register("served", served)
    db.register("feedback", feedback)
    joined = db.sql("""
        SELECT f.event, f.value, i.user_id, list_position(i.items, f.item_id) - 1 AS position
        FROM feedback f JOIN served i USING (request_id) ORDER BY f.event
    """).fetchall()
    assert joined == [("click", None, "7", 1), ("rating", 4.5, "7", 2)]
    assert metrics.impressions.labels("served", "written")._value.get() == 2
    assert metrics.impressions.labels("served_feedback", "written")._value.get() == 2


def test_a_full_queue_drops_and_counts_instead_of_blocking(settings: Settings) -> None:
    metrics = ServingMetrics()
    with Runtime(settings) as runtime:
        logger = ImpressionLogger(
            runtime.ingestion,
            runtime.datasets,
            deployment="home",
            impressions="tiny_log",
            metrics=metrics,
            flush_seconds=0.05,
            max_pending=2,
        )
        for number in range(200):
            logger.log(_impression(f"r{number}", 1, [1]))
        logger.close()
        written = runtime.datasets.read("tiny_log", principal=ADMIN).num_rows
    dropped = metrics.impressions.labels("tiny_log", "dropped")._value.get()
    assert written + dropped == 200
    assert dropped > 0


def test_feature_vectors_are_left_out_unless_asked(settings: Settings) -> None:
    with Runtime(settings) as runtime:
        logger = ImpressionLogger(
            runtime.ingestion,
            runtime.datasets,
            deployment="home",
            impressions="plain_log",
            log_features=False,
            flush_seconds=0.01,
        )
        logger.log(_impression("r1", 1, [1, 2]))
        logger.close()
        table = runtime.datasets.read("plain_log", principal=ADMIN)
    assert table.column("features").to_pylist() == [None]
