"""The dataset service: create, read, time travel, history, ownership and the dead-letter dataset."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest
from tests.fixtures.lake import append, rating_rows, ratings_spec

from recplane.auth import ADMIN, Principal
from recplane.errors import AlreadyExists, Forbidden, InvalidInput, InvalidSpec, NotFound
from recplane.lake import DatasetService, load_spec

RECSYS = Principal(team="recsys")
GROWTH = Principal(team="growth")


def test_create_registers_an_empty_version_zero(service: DatasetService) -> None:
    info = service.create(ratings_spec(), principal=RECSYS, author="alice")
    assert (info.name, info.team, info.schema_version, info.current_version) == ("ratings", "recsys", 1, 0)
    assert info.location.endswith("/ratings") and info.created_at.tzinfo is not None
    table = service.read("ratings", principal=RECSYS)
    assert table.num_rows == 0 and table.schema == ratings_spec().arrow_schema()


def test_create_twice_is_already_exists(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    with pytest.raises(AlreadyExists, match="Dataset 'ratings' exists already"):
        service.create(ratings_spec(), principal=ADMIN)


def test_create_makes_a_readable_dead_letter_dataset(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=RECSYS)
    dead = service.get("ratings__rejected", principal=RECSYS)
    assert dead.team == "recsys" and dead.spec["event_time"] == "received_at"
    columns = service.read("ratings__rejected", principal=RECSYS).column_names
    assert columns == ["raw", "reason", "received_at", "batch_id", "source"]


def test_users_cannot_create_dead_letter_names(service: DatasetService) -> None:
    with pytest.raises(InvalidSpec, match="reserved for dead-letter datasets"):
        service.create(ratings_spec(name="x__rejected"), principal=ADMIN)


def test_invalid_quality_rules_are_refused_at_create(service: DatasetService) -> None:
    spec = ratings_spec(quality=[{"rule": "range", "column": "no_such_column", "min": 0}])
    with pytest.raises(InvalidSpec, match="no_such_column"):
        service.create(spec, principal=ADMIN)
    with pytest.raises(NotFound):
        service.get("ratings", principal=ADMIN)


def test_read_returns_rows_in_the_logical_schema(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(3))
    table = service.read("ratings", principal=ADMIN)
    assert table.to_pylist() == rating_rows(3)
    assert service.read("ratings", principal=ADMIN, columns=["rating", "user_id"]).column_names == [
        "rating", "user_id",
    ]


def test_unknown_column_is_named_with_the_valid_ones(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    with pytest.raises(InvalidInput, match=r"Unknown column\(s\) \['score'\].*valid columns are \['user_id'"):
        service.read("ratings", principal=ADMIN, columns=["score"])


def test_time_travel_by_version(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(2))
    append(service, "ratings", rating_rows(3, start=2))
    assert service.read("ratings", principal=ADMIN, version=1).num_rows == 2
    assert service.read("ratings", principal=ADMIN, version=2).num_rows == 5
    with pytest.raises(NotFound, match=r"Version 7 does not exist; versions are 0\.\.2"):
        service.read("ratings", principal=ADMIN, version=7)


def test_time_travel_by_timestamp(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(2))
    time.sleep(0.02)
    append(service, "ratings", rating_rows(3, start=2))
    first_append = next(v for v in service.history("ratings", principal=ADMIN) if v.version == 1)
    assert service.read("ratings", principal=ADMIN, as_of=first_append.timestamp).num_rows == 2
    created = service.history("ratings", principal=ADMIN)[-1].timestamp
    with pytest.raises(NotFound, match="before the dataset existed"):
        service.read("ratings", principal=ADMIN, as_of=created - timedelta(days=1))


def test_history_is_newest_first_with_rows_author_and_batches(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN, author="alice")
    append(service, "ratings", rating_rows(4), author="ingest", batch_ids=["b1", "b2"])
    history = service.history("ratings", principal=ADMIN)
    assert [(v.version, v.operation) for v in history] == [(1, "append"), (0, "create")]
    assert (history[0].rows_added, history[0].author, history[0].batch_count) == (4, "ingest", 2)
    assert (history[1].author, history[1].schema_version, history[1].rows_added) == ("alice", 1, 0)


def test_other_team_is_forbidden_everywhere(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=RECSYS)
    for call in (
        lambda: service.get("ratings", principal=GROWTH),
        lambda: service.read("ratings", principal=GROWTH),
        lambda: service.history("ratings", principal=GROWTH),
        lambda: service.stats("ratings", principal=GROWTH),
        lambda: service.compact("ratings", principal=GROWTH),
        lambda: service.apply(ratings_spec(description="mine now"), principal=GROWTH),
    ):
        with pytest.raises(Forbidden, match="belongs to team 'recsys'"):
            call()


def test_non_admin_creates_only_for_its_own_team(service: DatasetService) -> None:
    with pytest.raises(Forbidden):
        service.create(ratings_spec(), principal=GROWTH)


def test_list_shows_a_team_only_its_datasets(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=RECSYS)
    service.create(ratings_spec(name="signups", team="growth"), principal=GROWTH)
    assert [d.name for d in service.list(principal=GROWTH)] == ["signups", "signups__rejected"]
    assert len(service.list(principal=ADMIN)) == 4


def test_missing_dataset_is_not_found(service: DatasetService) -> None:
    with pytest.raises(NotFound, match="No dataset named 'nope'"):
        service.read("nope", principal=ADMIN)


def test_vectors_lists_maps_and_binary_round_trip(service: DatasetService) -> None:
    spec = load_spec({
        "name": "items", "columns": {
            "item_id": "int64", "emb": "vector<float32, 3>", "genres": "list<string>",
            "props": "map<string, float64>", "thumb": "binary", "day": "date", "flag": "bool", "tiny": "int8",
        },
    })
    service.create(spec, principal=ADMIN)
    rows: list[dict[str, Any]] = [
        {"item_id": 1, "emb": [0.5, 1.0, -2.0], "genres": ["drama", "crime"], "props": [("len", 2.5)],
         "thumb": b"\x89PNG\x00", "day": None, "flag": True, "tiny": -3},
        {"item_id": 2, "emb": None, "genres": [], "props": [], "thumb": None, "day": None, "flag": None,
         "tiny": None},
    ]
    append(service, "items", rows)
    table = service.read("items", principal=ADMIN)
    assert table.schema.field("emb").type == pa.list_(pa.float32(), 3)
    assert table.to_pylist() == rows
