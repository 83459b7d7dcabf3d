"""Replacing a dataset from a RecordBatchReader: batches validated and written as they are read, one version at the
end, nothing written when a batch is invalid or the reader fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from tests.fixtures.lake import append, rating_rows, ratings_spec

from recplane.auth import Principal
from recplane.errors import InvalidInput
from recplane.lake import DatasetService

RECSYS = Principal(team="recsys")
SCHEMA = ratings_spec().arrow_schema()


def _reader(batches: list[list[dict[str, Any]]], pulled: list[int] | None = None) -> pa.RecordBatchReader:
    def produce() -> Iterator[pa.RecordBatch]:
        for index, rows in enumerate(batches):
            if pulled is not None:
                pulled.append(index)
            yield pa.RecordBatch.from_pylist(rows, schema=SCHEMA)

    return pa.RecordBatchReader.from_batches(SCHEMA, produce())


@pytest.fixture
def ratings(service: DatasetService) -> int:
    """A ratings dataset with 5 rows in version 1; returns that version."""
    service.create(ratings_spec(), principal=RECSYS)
    return append(service, "ratings", rating_rows(5))


def test_a_reader_replaces_the_content_as_one_version_counting_its_rows(
    service: DatasetService, ratings: int
) -> None:
    batches = [rating_rows(3, start=100 + 3 * n) for n in range(4)]
    pulled: list[int] = []
    version = service.replace("ratings", _reader(batches, pulled), principal=RECSYS, metadata={"run": "r1"})
    assert version == ratings + 1 and pulled == [0, 1, 2, 3]
    rows = service.read("ratings", principal=RECSYS).sort_by("user_id").to_pylist()
    assert rows == [row for batch in batches for row in batch]
    newest = service.history("ratings", principal=RECSYS)[0]
    assert (newest.operation, newest.rows_added, newest.rows_removed) == ("replace", 12, 5)
    assert newest.metadata["run"] == "r1"


def test_an_invalid_row_in_a_later_batch_writes_nothing_and_names_the_row(
    service: DatasetService, ratings: int
) -> None:
    bad = rating_rows(3, start=200)
    bad[1]["user_id"] = None
    with pytest.raises(InvalidInput) as refused:
        service.replace("ratings", _reader([rating_rows(4, start=100), bad]), principal=RECSYS)
    message = str(refused.value)
    assert "nothing was replaced" in message and "row 5: column 'user_id' is null" in message
    assert service.get("ratings", principal=RECSYS).current_version == ratings
    assert service.read("ratings", principal=RECSYS).num_rows == 5


def test_an_error_raised_by_the_reader_reaches_the_caller_and_writes_nothing(
    service: DatasetService, ratings: int
) -> None:
    def failing() -> Iterator[pa.RecordBatch]:
        yield pa.RecordBatch.from_pylist(rating_rows(2, start=100), schema=SCHEMA)
        raise InvalidInput("the source ran dry")

    with pytest.raises(InvalidInput, match="the source ran dry"):
        service.replace("ratings", pa.RecordBatchReader.from_batches(SCHEMA, failing()), principal=RECSYS)
    assert service.get("ratings", principal=RECSYS).current_version == ratings


def test_an_empty_reader_clears_the_dataset(service: DatasetService, ratings: int) -> None:
    version = service.replace("ratings", _reader([]), principal=RECSYS)
    assert version == ratings + 1 and service.read("ratings", principal=RECSYS).num_rows == 0


def test_duplicates_in_different_batches_of_a_dedup_dataset_are_refused(service: DatasetService) -> None:
    service.create(ratings_spec(dedup_key=["user_id", "item_id"]), principal=RECSYS)
    version = append(service, "ratings", rating_rows(2))
    first, second = rating_rows(2, start=50), rating_rows(1, start=50)
    with pytest.raises(InvalidInput, match=r"repeat the dedup key \['user_id', 'item_id'\]"):
        service.replace("ratings", _reader([first, second]), principal=RECSYS)
    assert service.get("ratings", principal=RECSYS).current_version == version
