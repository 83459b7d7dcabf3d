"""Automatic compaction merges in tiers: fresh files into ~1 MiB, those into ~16 MiB, and large files stay put."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from tests.fixtures.lake import append, rating_rows, ratings_spec

from recplane.auth import ADMIN
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.lake import DatasetService
from recplane.lake.maintenance import FIRST_TIER_BYTES, SECOND_TIER_BYTES, TIER_FAN_IN, automatic_target

KIB, MIB = 1024, 1024 * 1024


def test_fresh_files_merge_into_the_first_tier_once_there_are_enough() -> None:
    assert automatic_target([20 * KIB] * 31, min_files=32) is None
    assert automatic_target([20 * KIB] * 32, min_files=32) == FIRST_TIER_BYTES


def test_enough_first_tier_files_merge_into_the_second_tier() -> None:
    first_tier = [900 * KIB] * TIER_FAN_IN
    assert automatic_target(first_tier[:-1] + [20 * KIB] * 3, min_files=32) is None
    assert automatic_target(first_tier + [20 * KIB] * 3, min_files=32) == SECOND_TIER_BYTES


def test_large_files_never_count_towards_a_compaction() -> None:
    assert automatic_target([40 * MIB] * 100 + [12 * MIB] * 100, min_files=32) is None
    assert automatic_target([20 * KIB] * 100, min_files=0) is None


def test_a_first_tier_compaction_leaves_larger_files_alone(settings: Settings) -> None:
    tuned = settings.model_copy(update={"compact_after_files": 3})
    service = DatasetService(Catalog(tuned.catalog_url), tuned)
    service.create(ratings_spec(), principal=ADMIN)
    rng = np.random.default_rng(7)
    big = 200_000  # random ids do not compress: a file past the first tier
    opened = service.open("ratings", principal=ADMIN)
    opened.table.append(pa.table({
        "user_id": pa.array(rng.integers(0, 2**31 - 1, big), pa.int32()),
        "item_id": pa.array(rng.integers(0, 2**62, big), pa.int64()),
        "rating": pa.array(rng.random(big), pa.float32()),
        "ts": pa.array(np.zeros(big, dtype="datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
    }))
    large = set(opened.table.refresh().file_uris())
    for start in range(3):
        append(service, "ratings", rating_rows(2, start=10 * start))
    result = service.maybe_compact("ratings")
    assert result is not None and (result.files_removed, result.files_added) == (3, 1)
    assert result.details["target_size"] == FIRST_TIER_BYTES
    assert large <= set(opened.table.refresh().file_uris())
    assert service.read("ratings", principal=ADMIN).num_rows == big + 6
    assert service.maybe_compact("ratings") is None
