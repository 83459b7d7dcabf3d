"""Replacing a dataset's whole content as one version: validated all or nothing, dedup-checked, time-travelable."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from tests.fixtures.lake import T0, append, rating_rows, ratings_spec, with_columns

from recplane.auth import ADMIN, Principal
from recplane.errors import Forbidden, InvalidInput
from recplane.lake import DatasetService
from recplane.lake.datasets import replacement_table

RECSYS = Principal(team="recsys")
GROWTH = Principal(team="growth")


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ratings_spec().arrow_schema())


@pytest.fixture
def ratings(service: DatasetService) -> int:
    """A ratings dataset with 5 rows in version 1; returns that version."""
    service.create(ratings_spec(), principal=RECSYS)
    return append(service, "ratings", rating_rows(5))


def test_replace_makes_a_version_holding_exactly_the_new_rows(service: DatasetService, ratings: int) -> None:
    new_rows = rating_rows(3, start=50)
    version = service.replace("ratings", _table(new_rows), principal=RECSYS)
    assert version == ratings + 1
    assert service.read("ratings", principal=RECSYS).sort_by("user_id").to_pylist() == new_rows
    assert service.get("ratings", principal=RECSYS).current_version == version
    assert service.open("ratings", principal=RECSYS).info.current_version == version


def test_older_versions_stay_readable_after_a_replace(service: DatasetService, ratings: int) -> None:
    service.replace("ratings", _table(rating_rows(2, start=50)), principal=RECSYS)
    old = service.read("ratings", principal=RECSYS, version=ratings).sort_by("user_id")
    assert old.to_pylist() == rating_rows(5)


def test_history_shows_a_replace_with_rows_added_and_removed(service: DatasetService, ratings: int) -> None:
    service.replace("ratings", _table(rating_rows(3, start=50)), principal=RECSYS, metadata={"reason": "backfill"})
    newest = service.history("ratings", principal=RECSYS)[0]
    assert (newest.operation, newest.rows_added, newest.rows_removed) == ("replace", 3, 5)
    assert newest.author == "team:recsys" and newest.schema_version == 1
    assert newest.metadata["reason"] == "backfill"


def test_json_like_values_are_converted_as_ingestion_converts_them(service: DatasetService, ratings: int) -> None:
    rows = [{"user_id": 7, "item_id": 3, "rating": 4, "ts": "2026-01-01T00:00:00Z"}, {"user_id": 8}]
    service.replace("ratings", replacement_table(rows), principal=RECSYS)
    table = service.read("ratings", principal=RECSYS).sort_by("user_id")
    assert table.to_pylist() == [
        {"user_id": 7, "item_id": 3, "rating": 4.0, "ts": T0},
        {"user_id": 8, "item_id": None, "rating": None, "ts": None},
    ]
    assert table.schema == ratings_spec().arrow_schema()


def test_a_pandas_frame_replaces_like_a_table(service: DatasetService, ratings: int) -> None:
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 20], "rating": [1.5, 2.5], "ts": [T0, T0]})
    service.replace("ratings", replacement_table(frame), principal=RECSYS)
    assert sorted(service.read("ratings", principal=RECSYS)["item_id"].to_pylist()) == [10, 20]


def test_one_invalid_row_refuses_the_whole_replace_and_names_it(service: DatasetService, ratings: int) -> None:
    rows = [
        {"user_id": 1, "ts": "2026-01-01T00:00:00Z"},
        {"user_id": 2, "ts": "2026-01-02"},
        {"user_id": None, "ts": "2026-01-03"},
        {"user_id": 4, "ts": "yesterday"},
    ]
    with pytest.raises(InvalidInput) as refused:
        service.replace("ratings", replacement_table(rows), principal=RECSYS)
    message = str(refused.value)
    assert "2 of 4 rows" in message and "nothing was replaced" in message
    assert "row 2: column 'user_id' is null" in message and "row 3: column 'ts': value 'yesterday'" in message
    assert service.get("ratings", principal=RECSYS).current_version == ratings
    assert service.read("ratings", principal=RECSYS).num_rows == 5


def test_unknown_columns_refuse_the_replace(service: DatasetService, ratings: int) -> None:
    with pytest.raises(InvalidInput, match=r"Unknown column\(s\) \['colour'\]"):
        service.replace("ratings", replacement_table([{"user_id": 1, "colour": "red"}]), principal=RECSYS)
    assert service.get("ratings", principal=RECSYS).current_version == ratings


def test_repeated_dedup_keys_refuse_the_replace(service: DatasetService) -> None:
    service.create(ratings_spec(dedup_key=["user_id", "item_id"]), principal=RECSYS)
    version = append(service, "ratings", rating_rows(2))
    rows = [{"user_id": 1, "item_id": 5}, {"user_id": 2, "item_id": 5}, {"user_id": 1, "item_id": 5}]
    with pytest.raises(
        InvalidInput,
        match=r"1 row\(s\) repeat the dedup key \['user_id', 'item_id'\]"
        r".*row 2: duplicate dedup key \(user_id=1, item_id=5\) as an earlier row",
    ):
        service.replace("ratings", replacement_table(rows), principal=RECSYS)
    assert service.get("ratings", principal=RECSYS).current_version == version
    # Keys already in the dataset are no conflict: the replace removes those rows.
    service.replace("ratings", replacement_table(rows[:2]), principal=RECSYS)
    assert service.read("ratings", principal=RECSYS).num_rows == 2


def test_an_empty_table_clears_the_dataset(service: DatasetService, ratings: int) -> None:
    version = service.replace("ratings", replacement_table([]), principal=RECSYS)
    assert service.read("ratings", principal=RECSYS).num_rows == 0
    newest = service.history("ratings", principal=RECSYS)[0]
    assert (newest.version, newest.rows_added, newest.rows_removed) == (version, 0, 5)
    assert service.read("ratings", principal=RECSYS, version=ratings).num_rows == 5


def test_another_team_may_not_replace(service: DatasetService, ratings: int) -> None:
    with pytest.raises(Forbidden, match="belongs to team 'recsys'"):
        service.replace("ratings", _table(rating_rows(1)), principal=GROWTH)
    assert service.get("ratings", principal=ADMIN).current_version == ratings


def test_dead_letter_datasets_cannot_be_replaced(service: DatasetService, ratings: int) -> None:
    with pytest.raises(InvalidInput, match="dead-letter dataset"):
        service.replace("ratings__rejected", replacement_table([]), principal=RECSYS)


def test_metadata_may_not_overwrite_recplane_keys(service: DatasetService, ratings: int) -> None:
    with pytest.raises(InvalidInput, match=r"\['rows_added'\] are recorded by recplane"):
        service.replace("ratings", _table([]), principal=RECSYS, metadata={"rows_added": 0})
    with pytest.raises(InvalidInput, match="must be JSON"):
        service.replace("ratings", _table([]), principal=RECSYS, metadata={"when": object()})
    assert service.get("ratings", principal=RECSYS).current_version == ratings


def test_replace_after_a_schema_change_writes_the_new_schema(service: DatasetService, ratings: int) -> None:
    service.apply(with_columns(ratings_spec(), genre="string"), principal=RECSYS)
    version = service.replace("ratings", replacement_table([{"user_id": 1, "genre": "drama"}]), principal=RECSYS)
    assert service.read("ratings", principal=RECSYS).to_pylist()[0]["genre"] == "drama"
    assert "genre" not in service.read("ratings", principal=RECSYS, version=ratings).column_names
    assert service.history("ratings", principal=RECSYS)[0].schema_version == 2 and version == ratings + 2


def test_replace_keeps_the_partitioning(service: DatasetService) -> None:
    service.create(ratings_spec(partition_by=["item_id"]), principal=RECSYS)
    service.replace("ratings", _table(rating_rows(4)), principal=RECSYS)
    opened = service.open("ratings", principal=RECSYS)
    assert opened.table.refresh().metadata().partition_columns == ["item_id"]
    assert all("item_id=" in uri for uri in opened.table.table.file_uris())
    assert service.read("ratings", principal=RECSYS).num_rows == 4


def test_replacement_table_explains_unusable_input() -> None:
    with pytest.raises(InvalidInput, match="Row 1 is a int"):
        replacement_table([{"user_id": 1}, 5])
    with pytest.raises(InvalidInput, match="Column 'ts' holds values"):
        replacement_table([{"ts": "2026-01-01"}, {"ts": T0}])
    with pytest.raises(InvalidInput, match=r"give a pyarrow\.Table"):
        replacement_table("ratings.csv")
