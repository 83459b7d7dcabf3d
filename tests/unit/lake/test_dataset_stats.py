"""Dataset statistics checked against numbers computed by hand."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.lake import T0, append, rating_rows, ratings_spec

from recplane.auth import ADMIN
from recplane.lake import DatasetService, load_spec

EXTRA: list[dict[str, Any]] = [
    {"user_id": 9, "item_id": None, "rating": None, "ts": None},
    {"user_id": 9, "item_id": 100, "rating": float("nan"), "ts": T0 - timedelta(days=1)},
]


def test_stats_match_hand_computed_values(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(4))  # users 0..3, items 100..103, ratings 1..4, days 0..3
    append(service, "ratings", EXTRA)
    stats = service.stats("ratings", principal=ADMIN)
    columns = {column.name: column for column in stats.columns}
    assert (stats.version, stats.rows, stats.files) == (2, 6, 2)
    assert (columns["user_id"].null_count, columns["user_id"].min, columns["user_id"].max) == (0, 0, 9)
    assert columns["user_id"].distinct_estimate == 5
    item = columns["item_id"]
    assert (item.null_count, item.null_rate, item.min, item.max, item.distinct_estimate) == (
        1, pytest.approx(1 / 6), 100, 103, 4,
    )
    rating = columns["rating"]
    assert (rating.type, rating.null_count, rating.min, rating.max) == ("float32", 1, 1.0, 4.0)
    ts = columns["ts"]
    assert (ts.min, ts.max) == ((T0 - timedelta(days=1)).isoformat(), (T0 + timedelta(days=3)).isoformat())


def test_stats_bytes_are_the_data_files_on_disk(service: DatasetService) -> None:
    info = service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(4))
    on_disk = sum(path.stat().st_size for path in Path(info.location).glob("*.parquet"))
    assert service.stats("ratings", principal=ADMIN).bytes == on_disk > 0


def test_stats_at_an_older_version(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(4))
    append(service, "ratings", EXTRA)
    old = service.stats("ratings", principal=ADMIN, version=1)
    assert (old.version, old.rows, old.files) == (1, 4, 1)
    empty = service.stats("ratings", principal=ADMIN, version=0)
    assert (empty.rows, empty.files, empty.columns[0].null_rate, empty.columns[0].min) == (0, 0, 0.0, None)


def test_nested_columns_get_no_min_max(service: DatasetService) -> None:
    spec = load_spec({"name": "items", "columns": {"emb": "vector<float32, 2>", "tags": "list<string>",
                                                   "props": "map<string, string>", "thumb": "binary"}})
    service.create(spec, principal=ADMIN)
    append(service, "items", [{"emb": [1, 2], "tags": ["a"], "props": [("k", "v")], "thumb": b"x"},
                              {"emb": [1, 2], "tags": None, "props": None, "thumb": b"y"}])
    columns = {c.name: c for c in service.stats("items", principal=ADMIN).columns}
    assert all(c.min is None and c.max is None for c in columns.values())
    assert (columns["emb"].type, columns["emb"].distinct_estimate) == ("vector<float32, 2>", 1)
    assert (columns["tags"].null_count, columns["thumb"].distinct_estimate) == (1, 2)
