"""Dedup keys: duplicates of committed rows, or within a commit, go to dead letters with the key."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recplane import Client
from recplane.config import Settings
from recplane.ingest.dedup import ALREADY_COMMITTED, split_duplicates

SPEC = {
    "name": "ratings",
    "columns": {"user_id": {"type": "int64", "nullable": False}, "item_id": "int64", "rating": "float32"},
    "dedup_key": ["user_id", "item_id"],
}


def test_split_keeps_first_occurrence_and_names_the_key() -> None:
    rows = pa.table({"u": [1, 2, 2, 3, None, None], "i": [1, 1, 1, 1, 5, 5], "x": [0, 1, 2, 3, 4, 5]})
    existing = pads.dataset(pa.table({"u": [3], "i": [1], "x": [9]}))
    split = split_duplicates(rows, ["u", "i"], [(ALREADY_COMMITTED, existing)])
    assert split.unique["x"].to_pylist() == [0, 1, 4]
    assert split.duplicate_rows == [2, 3, 5]
    assert split.reasons[0] == "duplicate dedup key (u=2, i=1): repeated in the same commit"
    assert split.reasons[1] == "duplicate dedup key (u=3, i=1): already in the dataset"


def test_without_a_key_nothing_is_a_duplicate() -> None:
    rows = pa.table({"u": [1, 1]})
    assert split_duplicates(rows, [], []).unique.num_rows == 2


def test_ingest_sends_duplicates_to_dead_letters(settings: Settings) -> None:
    with Client(settings=settings) as client:
        client.create_dataset(SPEC)
        first = client.ingest("ratings", [{"user_id": 1, "item_id": 1, "rating": 4.0},
                                          {"user_id": 1, "item_id": 1, "rating": 5.0}])
        second = client.ingest("ratings", [{"user_id": 1, "item_id": 1, "rating": 3.0},
                                           {"user_id": 2, "item_id": 1, "rating": 3.0}])
        assert (first.accepted, first.rejected) == (1, 1)
        assert (second.accepted, second.rejected) == (1, 1)
        assert client.read("ratings").sort_by("user_id")["rating"].to_pylist() == [4.0, 3.0]
        reasons = client.read("ratings__rejected")["reason"].to_pylist()
        assert sorted(reasons) == [
            "duplicate dedup key (user_id=1, item_id=1): already in the dataset",
            "duplicate dedup key (user_id=1, item_id=1): repeated in the same commit",
        ]


def test_bulk_load_deduplicates_across_its_own_batches(settings: Settings, tmp_path: Path) -> None:
    n = 300_000  # above group_commit_max_rows below, so the bulk path streams it
    users = pa.array([i % 200_000 for i in range(n)], pa.int64())
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"user_id": users, "item_id": pa.array([7] * n, pa.int64()),
                             "rating": pa.array([1.0] * n, pa.float32())}), path, row_group_size=50_000)
    small = Settings(home=settings.home, group_commit_max_rows=100_000, group_commit_max_wait_ms=1)
    with Client(settings=small) as client:
        client.create_dataset(SPEC)
        client.ingest("ratings", [{"user_id": 0, "item_id": 7, "rating": 2.0}])
        result = client.ingest("ratings", path)
        assert result.accepted == 199_999
        assert result.rejected == 100_001
        assert client.stats("ratings").rows == 200_000
