"""The public face of recplane.lake is pinned: changing it is a deliberate act."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.fixtures.lake import ratings_spec

import recplane.lake
from recplane.auth import ADMIN
from recplane.lake import DatasetService


def test_lake_exports_exactly_its_public_api() -> None:
    assert sorted(recplane.lake.__all__) == sorted([
        "REJECTED_SUFFIX", "ColumnSpec", "ColumnStats", "DatasetInfo", "DatasetService", "DatasetSpec",
        "DatasetStats", "DatasetVersion", "DeltaDataset", "MaintenanceResult", "OpenDataset",
        "SchemaChangeResult", "SchemaPlan", "WidenedColumn", "load_spec", "plan_schema_change",
        "rejected_name",
    ])
    assert all(hasattr(recplane.lake, name) for name in recplane.lake.__all__)


def test_threads_share_one_delta_handle_per_dataset(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    with ThreadPoolExecutor(8) as pool:
        handles = list(pool.map(lambda _: service.open("ratings", principal=ADMIN).table, range(32)))
    assert len({id(handle) for handle in handles}) == 1
