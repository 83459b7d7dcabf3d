"""A ranker trains on a point-in-time training set from the feature store: features become row features, the run
records the feature lineage, the bundle carries the row encoder, and a resume rebuilds the identical table at the
pinned versions even after the views and their source have moved on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from recplane import Client
from recplane.config import Settings
from recplane.errors import InvalidInput, NotFound
from recplane.features import lineage_of
from recplane.training.row_features import RowFeatureEncoder
from recplane.training.service import TrainingService

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

START = datetime(2026, 1, 1, tzinfo=UTC)
EVENTS = {
    "name": "events",
    "event_time": "ts",
    "columns": {"user_id": "int64", "item_id": "int64", "label": "int64", "ts": "timestamp"},
}
FEATURES = """
entities: [{name: user, join_keys: [user_id]}, {name: item, join_keys: [item_id]}]
feature_views:
  - name: user_stats
    entities: [user]
    source: events
    features:
      - {name: user_events_2d, agg: count, window: 2d}
      - {name: user_click_rate, agg: mean, column: label, window: WINDOW}
  - name: item_stats
    entities: [item]
    source: events
    features:
      - {name: item_events_7d, agg: count, window: 7d}
feature_services: [{name: ranker, features: ["user_stats:*", "item_stats:*"]}]
"""
FEATURE_COLUMNS = ["user_events_2d", "user_click_rate", "item_events_7d"]


def _events(seed: int, *, users: int = 40, per_user: int = 25, offset: timedelta = timedelta()) -> list[dict[str, Any]]:
    """Users whose clicks come in streaks, so their recent click rate tells about the next one."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        clicking = bool(rng.random() < 0.5)
        for step in range(per_user):
            if rng.random() < 0.15:
                clicking = not clicking
            when = START + offset + timedelta(hours=user + 6 * step)
            label = int(rng.random() < (0.85 if clicking else 0.15))
            rows.append({"user_id": user, "item_id": int(rng.integers(0, 30)), "label": label, "ts": when})
    return rows


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as client:
        client.create_dataset(EVENTS)
        client.ingest("events", _events(0))
        client.apply_features(FEATURES.replace("WINDOW", "3d"))
        yield client


def _service(client: Client) -> TrainingService:
    service: TrainingService = client._impl.runtime.training  # type: ignore[union-attr]
    return service


def _spec(*, export: bool = False, **train: Any) -> dict[str, Any]:
    settings = {"model": "deepfm", "epochs": 2, "batch_size": 64, "lr": 0.01, "patience": None, **train}
    return {
        "name": "ranker-from-features",
        "training_set": {"labels": "events", "features": "ranker", "feature_lag": "1s"},
        "export": export,
        "train": settings,
    }


def test_a_ranker_trains_on_the_feature_services_training_set_and_records_its_lineage(client: Client) -> None:
    version = client.get_dataset("events").current_version
    trained = client.train(_spec(export=True))
    run, result = trained.run, trained.result
    assert run.status == "finished" and (run.dataset, run.dataset_version) == ("events", version)
    assert run.config["row_feature_columns"] == FEATURE_COLUMNS
    assert run.tags["feature_service"] == "ranker@1"
    assert run.tags["feature_views"] == "user_stats@1,item_stats@1"
    assert run.tags["feature_sources"] == f"events@{version}"
    assert run.tags["feature_lag"] == "1s"
    folder = Path(run.artifacts_uri)
    lineage = json.loads((folder / "training_set.json").read_text())
    assert lineage["feature_views"] == {"user_stats": 1, "item_stats": 1}
    assert lineage["labels"] == {"dataset": "events", "version": version}
    assert result.row_encoder is not None and result.row_encoder.columns == FEATURE_COLUMNS
    bundled = RowFeatureEncoder.from_json((folder / "model" / "row_features.json").read_text())
    assert bundled == result.row_encoder
    assert {"user_events_2d", "user_click_rate", "item_events_7d"} <= set(result.example_batch or {})


def test_features_are_looked_up_before_the_label_so_a_row_never_sees_its_own_event(client: Client) -> None:
    table = _service(client).training_set(_spec())
    first_rows = _first_row_of_each_user(table)
    assert {row["user_events_2d"] for row in first_rows} == {0}
    assert {row["user_click_rate"] for row in first_rows} == {None}
    assert lineage_of(table)["feature_lag"] == "1s"
    # Without the lag the window (t - 2d, t] holds the label's own event: its click rate is the label.
    no_lag = {**_spec(), "training_set": {"labels": "events", "features": "ranker"}}
    leaking = _first_row_of_each_user(_service(client).training_set(no_lag))
    assert {row["user_events_2d"] for row in leaking} == {1}
    assert all(row["user_click_rate"] == row["label"] for row in leaking)


def _first_row_of_each_user(table: pa.Table) -> list[dict[str, Any]]:
    first: dict[int, dict[str, Any]] = {}
    for row in table.sort_by([("ts", "descending")]).to_pylist():
        first[row["user_id"]] = row  # the earliest row of each user is written last
    return list(first.values())


def test_resume_rebuilds_the_identical_table_after_views_and_source_moved_on(client: Client) -> None:
    service = _service(client)
    straight = client.train(_spec(epochs=3))
    first = client.train(_spec(epochs=2))
    table = service.training_set(_spec(), resume=first.run.id)

    client.apply_features(FEATURES.replace("WINDOW", "9d"))  # user_stats v2: other click-rate values
    client.ingest("events", _events(1, offset=timedelta(hours=3)))  # new source rows inside the old windows
    moved = service.training_set(_spec())
    assert lineage_of(moved)["feature_views"]["user_stats"] == 2
    assert not moved.select(FEATURE_COLUMNS).equals(table.select(FEATURE_COLUMNS))

    again = service.training_set(_spec(), resume=first.run.id)
    assert again.equals(table)
    assert lineage_of(again) == lineage_of(table)

    resumed = client.train(_spec(epochs=3), resume=first.run.id)
    assert resumed.run.parent_id == first.run.id
    for tag in ("feature_service", "feature_views", "feature_sources"):
        assert resumed.run.tags[tag] == first.run.tags[tag]
    assert resumed.run.dataset_version == first.run.dataset_version
    assert resumed.result.row_encoder == straight.result.row_encoder
    assert resumed.run.metrics.test == pytest.approx(straight.run.metrics.test)


def test_a_retrieval_model_or_an_unknown_service_is_refused_clearly(client: Client) -> None:
    with pytest.raises(InvalidInput, match="row features need a ranking model"):
        client.train({**_spec(), "train": {"model": "mf"}})
    unknown = {**_spec(), "training_set": {"labels": "events", "features": "nope"}}
    with pytest.raises(NotFound, match="No feature service named 'nope'"):
        client.train(unknown)
    with pytest.raises(InvalidInput, match="no training_set section"):
        _service(client).training_set({"dataset": "events", "train": {"model": "deepfm"}})


def test_the_labels_table_is_passed_through_with_the_features_appended(client: Client) -> None:
    table = _service(client).training_set(_spec())
    labels = client.read("events")
    assert table.column_names == [*labels.column_names, *FEATURE_COLUMNS]
    assert table.select(labels.column_names).equals(labels.select(labels.column_names))
    assert pa.types.is_integer(table.schema.field("user_events_2d").type)
