"""Training sets end to end: definitions in the catalog, sources in Delta at pinned versions, lineage recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from recplane import Client
from recplane.config import Settings
from recplane.errors import InvalidInput
from recplane.features import lineage_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEFINITIONS = """
entities:
  - {name: user, join_keys: [user_id]}
feature_views:
  - name: user_stats
    entities: [user]
    source: purchases
    created_time: created
    ttl: 1d
    features:
      - price
      - {name: spend, expr: "price * quantity"}
      - {name: buys_7d, agg: count, window: 7d}
feature_services:
  - {name: ranker, features: ["user_stats:price", "user_stats:buys_7d"]}
"""


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as opened:
        opened.create_dataset(
            {
                "name": "purchases",
                "event_time": "ts",
                "columns": {
                    "user_id": "int64",
                    "price": "float64",
                    "quantity": "int32",
                    "ts": "timestamp",
                    "created": "timestamp",
                },
            }
        )
        opened.ingest(
            "purchases",
            [
                {"user_id": 1, "price": 2.0, "quantity": 3, "ts": at(1), "created": at(1)},
                {"user_id": 1, "price": 4.0, "quantity": 1, "ts": at(5), "created": at(5)},
                {"user_id": 2, "price": 9.0, "quantity": 1, "ts": at(2), "created": at(2)},
            ],
        )
        opened.apply_features(DEFINITIONS)
        yield opened


def test_a_feature_service_joins_point_in_time_over_the_lake(client: Client) -> None:
    labels = pa.table({"user_id": [1, 1, 2, 3], "ts": [at(3), at(6), at(40), at(6)], "clicked": [1, 0, 1, 0]})
    result = client.training_set(labels, "ranker")
    assert result.column_names == ["user_id", "ts", "clicked", "price", "buys_7d"]
    assert result["price"].to_pylist() == [2.0, 4.0, None, None]  # user 2's 02:00 value expired (ttl 1d)
    assert result["buys_7d"].to_pylist() == [1, 2, 1, 0]
    lineage = lineage_of(result)
    assert lineage["feature_service"] == {"name": "ranker", "version": 1}
    assert lineage["feature_views"] == {"user_stats": 1}
    assert lineage["sources"] == {"purchases": client.get_dataset("purchases").current_version}


def test_rows_ingested_later_are_invisible_at_the_pinned_source_version(client: Client) -> None:
    pinned = client.get_dataset("purchases").current_version
    client.ingest("purchases", [{"user_id": 1, "price": 8.0, "quantity": 1, "ts": at(5.5), "created": at(30)}])
    labels = pa.table({"user_id": [1], "ts": [at(6)]})
    assert client.training_set(labels, ["user_stats:price"])["price"].to_pylist() == [8.0]
    assert client.training_set(labels, ["user_stats:price"], exclude_created_after_label=True)["price"].to_pylist() == [
        4.0
    ]
    client.apply_features(
        DEFINITIONS.replace("created_time: created", f"created_time: created\n    source_version: {pinned}")
    )
    result = client.training_set(labels, ["user_stats:price"])
    assert result["price"].to_pylist() == [4.0]
    assert lineage_of(result)["feature_views"] == {"user_stats": 2}
    assert lineage_of(result)["sources"] == {"purchases": pinned}


def test_a_training_set_written_as_a_dataset_records_its_lineage(client: Client) -> None:
    client.create_dataset(
        {"name": "labels", "event_time": "ts", "columns": {"user_id": "int64", "ts": "timestamp", "clicked": "int32"}}
    )
    client.ingest("labels", [{"user_id": 1, "ts": at(6), "clicked": 1}, {"user_id": 2, "ts": at(3), "clicked": 0}])
    result = client.training_set("labels", ["user_stats:*"], write_to="ranker_training")
    stored = client.read("ranker_training")
    assert stored.column_names == result.column_names
    assert stored.sort_by("user_id")["spend"].to_pylist() == [4.0, 9.0]
    commit = client.history("ranker_training")[0]
    lineage = commit.metadata["training_set"]
    assert lineage["labels"] == {"dataset": "labels", "version": client.get_dataset("labels").current_version}
    assert lineage["feature_views"] == {"user_stats": 1}
    assert lineage_of(result)["written"] == {"dataset": "ranker_training", "version": commit.version}


def test_unknown_views_and_features_are_named(client: Client) -> None:
    labels = pa.table({"user_id": [1], "ts": [at(1)]})
    with pytest.raises(InvalidInput, match="No feature view named 'clicks'"):
        client.training_set(labels, ["clicks:n"])
    with pytest.raises(InvalidInput, match="has no feature 'nope'"):
        client.training_set(labels, ["user_stats:nope"])
