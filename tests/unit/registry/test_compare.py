"""Comparing two versions: deltas, which version wins each metric (by its direction), the settings that differ."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.fixtures.registry import RegistryHome, default_metrics, finished_run

from recplane.registry import ModelVersion
from recplane.registry.compare import compare_versions


def _version(number: int, metrics: dict[str, object], params: dict[str, object]) -> ModelVersion:
    return ModelVersion(
        name="mf",
        version=number,
        team="default",
        artifact_uri=f"/registry/mf/{number}",
        kind="retrieval",
        model_class="recplane.models.mf.MF",
        params=params,
        metrics=metrics,  # type: ignore[arg-type]
        created_at=datetime(2026, 11, 28, tzinfo=UTC),
    )


def test_each_metric_gets_its_delta_and_the_version_with_the_better_value() -> None:
    first = _version(
        1,
        {"test.recall@10": 0.20, "final_loss": 0.50, "best_epoch": 3, "test.ndcg@10": 0.1, "train_seconds": 4.0},
        {"lr": 0.01, "params": {"dim": 32}, "epochs": 5},
    )
    second = _version(
        2,
        {"test.recall@10": 0.25, "final_loss": 0.40, "best_epoch": 5, "test.ndcg@10": 0.1, "coverage": 0.5},
        {"lr": 0.05, "params": {"dim": 32, "dropout": 0.1}, "epochs": 5},
    )
    comparison = compare_versions(first, second)
    rows = {row.name: row for row in comparison.metrics}

    assert comparison.versions == (1, 2)
    assert [row.name for row in comparison.metrics][:2] == ["test.ndcg@10", "test.recall@10"]  # test metrics first
    assert rows["test.recall@10"].delta == pytest.approx(0.05) and rows["test.recall@10"].better == 2
    assert rows["test.recall@10"].higher_is_better is True
    assert rows["final_loss"].delta == pytest.approx(-0.1) and rows["final_loss"].better == 2
    assert rows["final_loss"].higher_is_better is False
    assert rows["test.ndcg@10"].delta == 0 and rows["test.ndcg@10"].better is None  # a tie has no winner
    assert rows["best_epoch"].higher_is_better is None and rows["best_epoch"].better is None  # not scored
    assert rows["train_seconds"].values == (4.0, None) and rows["train_seconds"].delta is None
    assert rows["coverage"].values == (None, 0.5)
    assert {change.name: change.values for change in comparison.params} == {
        "lr": (0.01, 0.05),
        "params.dropout": (None, 0.1),
    }


def test_the_registry_compares_versions_named_by_number_or_alias(home: RegistryHome, model_folder: Path) -> None:
    older = finished_run(home.runs, model_folder, metrics=default_metrics(recall=0.3, loss=0.4), lr=0.01)
    newer = finished_run(home.runs, model_folder, metrics=default_metrics(recall=0.2, loss=0.6), lr=0.05)
    home.registry.register("mf", run_id=older.id)
    home.registry.register("mf", run_id=newer.id)
    home.registry.set_alias("mf", "production", 1)

    comparison = home.registry.compare("mf", "production", 2)
    rows = {row.name: row for row in comparison.metrics}
    assert comparison.versions == (1, 2)
    assert rows["test.recall@10"].better == 1 and rows["test.recall@10"].delta == pytest.approx(-0.1)
    assert rows["final_loss"].better == 1
    assert rows["valid_metric"].values == ("recall@10", "recall@10") and rows["valid_metric"].delta is None
    assert [change.name for change in comparison.params] == ["lr"]
