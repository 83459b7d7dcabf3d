"""Applying specs to existing datasets: what evolves, what stays readable, and what is refused."""

from __future__ import annotations

import pyarrow as pa
import pytest
from tests.fixtures.lake import append, rating_rows, ratings_spec, with_columns

from recplane.auth import ADMIN
from recplane.errors import SchemaChangeRefused
from recplane.lake import DatasetService


def test_apply_creates_a_missing_dataset(service: DatasetService) -> None:
    result = service.apply(ratings_spec(), principal=ADMIN)
    assert (result.action, result.schema_version, result.delta_version) == ("created", 1, 0)
    assert service.apply(ratings_spec(), principal=ADMIN).action == "unchanged"


def test_added_column_reads_as_null_in_old_rows(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(2))
    result = service.apply(with_columns(ratings_spec(), genre="string"), principal=ADMIN, author="bob")
    assert (result.action, result.added_columns, result.schema_version, result.delta_version) == (
        "evolved", ["genre"], 2, 2,
    )
    assert service.read("ratings", principal=ADMIN).column("genre").to_pylist() == [None, None]
    assert "genre" not in service.read("ratings", principal=ADMIN, version=1).column_names
    change = service.history("ratings", principal=ADMIN)[0]
    assert (change.operation, change.schema_version, change.author) == ("schema-change", 2, "bob")
    assert service.get("ratings", principal=ADMIN).schema_version == 2


def test_rows_with_the_new_column_append_after_evolution(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(1))
    service.apply(with_columns(ratings_spec(), genre="string"), principal=ADMIN)
    append(service, "ratings", [{**rating_rows(1, start=1)[0], "genre": "drama"}])
    table = service.read("ratings", principal=ADMIN).sort_by("user_id")
    assert table.column("genre").to_pylist() == [None, "drama"]


def test_widening_keeps_old_versions_readable_with_old_types(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(3))
    widened = with_columns(ratings_spec(), user_id={"type": "int64", "nullable": False}, rating="float64")
    result = service.apply(widened, principal=ADMIN)
    assert [(w.column, w.from_, w.to) for w in result.widened_columns] == [
        ("user_id", "int32", "int64"), ("rating", "float32", "float64"),
    ]
    assert result.model_dump()["widened_columns"][0]["from"] == "int32"
    now = service.read("ratings", principal=ADMIN)
    before = service.read("ratings", principal=ADMIN, version=1)
    assert (now.schema.field("user_id").type, now.schema.field("rating").type) == (pa.int64(), pa.float64())
    assert (before.schema.field("user_id").type, before.schema.field("rating").type) == (
        pa.int32(), pa.float32(),
    )
    assert now.column("user_id").to_pylist() == before.column("user_id").to_pylist() == [0, 1, 2]
    rewrite = service.history("ratings", principal=ADMIN)[0]
    assert (rewrite.operation, rewrite.rows_added, rewrite.rows_removed, rewrite.schema_version) == (
        "schema-change", 0, 0, 2,
    )


def test_widened_column_accepts_values_beyond_the_old_range(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    service.apply(with_columns(ratings_spec(), user_id={"type": "int64", "nullable": False}), principal=ADMIN)
    append(service, "ratings", [{**rating_rows(1)[0], "user_id": 2**40}])
    assert service.read("ratings", principal=ADMIN).column("user_id").to_pylist() == [2**40]


def test_relaxed_column_accepts_nulls(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    result = service.apply(with_columns(ratings_spec(), user_id="int32"), principal=ADMIN)
    assert result.relaxed_columns == ["user_id"]
    append(service, "ratings", [{**rating_rows(1)[0], "user_id": None}])
    assert service.read("ratings", principal=ADMIN).column("user_id").to_pylist() == [None]


def test_metadata_change_updates_the_spec_without_a_commit(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    result = service.apply(ratings_spec(description="star ratings", retention="30d"), principal=ADMIN)
    assert (result.action, result.schema_version, result.delta_version) == ("evolved", 1, None)
    assert set(result.metadata_changes) == {"description", "retention"}
    info = service.get("ratings", principal=ADMIN)
    assert (info.description, info.spec["retention"], info.current_version) == ("star ratings", "30d", 0)
    assert service.get("ratings__rejected", principal=ADMIN).spec["retention"] == "30d"


def test_refused_change_leaves_the_dataset_untouched(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    with pytest.raises(SchemaChangeRefused, match="cannot change from int64 to string"):
        service.apply(with_columns(ratings_spec(), item_id="string"), principal=ADMIN)
    info = service.get("ratings", principal=ADMIN)
    item_type = info.spec["columns"]["item_id"]["type"]
    assert (info.schema_version, info.current_version, item_type) == (1, 0, "int64")


def test_widening_a_partitioned_dataset_keeps_its_partitions(service: DatasetService) -> None:
    spec = ratings_spec(partition_by=["item_id"])
    service.create(spec, principal=ADMIN)
    append(service, "ratings", rating_rows(4))
    service.apply(with_columns(spec, rating="float64"), principal=ADMIN)
    opened = service.open("ratings", principal=ADMIN)
    assert opened.table.table.metadata().partition_columns == ["item_id"]
    assert sorted(service.read("ratings", principal=ADMIN).column("user_id").to_pylist()) == [0, 1, 2, 3]


def test_widening_and_adding_in_one_apply(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(2))
    result = service.apply(with_columns(ratings_spec(), rating="float64", genre="string"), principal=ADMIN)
    assert (result.added_columns, result.schema_version, result.delta_version) == (["genre"], 2, 2)
    table = service.read("ratings", principal=ADMIN)
    assert table.schema.field("rating").type == pa.float64() and table.column("genre").null_count == 2
    old = service.read("ratings", principal=ADMIN, version=1)
    assert old.column_names == ["user_id", "item_id", "rating", "ts"]
