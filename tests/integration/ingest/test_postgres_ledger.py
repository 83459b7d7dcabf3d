"""Idempotency keys on a PostgreSQL catalog: retries, restarts and reconciled crashes append once."""

from __future__ import annotations

from pathlib import Path

import pytest

from recplane.auth import ADMIN
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.ingest import IngestService, Validator
from recplane.ingest.sources import RowChunk
from recplane.lake import DatasetService, DeltaDataset, load_spec

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SPEC = load_spec({"name": "clicks", "columns": {"user_id": {"type": "int64", "nullable": False}}})


def test_batch_ids_are_recorded_once_in_postgres(fresh_postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=fresh_postgres_url, group_commit_max_wait_ms=2.0)
    catalog = Catalog(settings.catalog_url)
    datasets = DatasetService(catalog, settings)
    datasets.create(SPEC, principal=ADMIN)
    rows = [{"user_id": i} for i in range(5)]
    location = datasets.get("clicks", principal=ADMIN).location
    crashed = Validator(SPEC).validate_rows(RowChunk(rows)).accepted
    orphan = DeltaDataset(location).append(crashed, metadata={"batch_ids": ["crashed"]})
    try:
        first = IngestService(catalog, datasets, settings)
        assert first.ingest("clicks", rows, principal=ADMIN, batch_id="crashed").version == orphan
        assert not first.ingest("clicks", rows, principal=ADMIN, batch_id="k").duplicate
        assert first.ingest("clicks", rows, principal=ADMIN, batch_id="k").duplicate
        first.close()
        second = IngestService(catalog, datasets, settings)
        assert second.ingest("clicks", rows, principal=ADMIN, batch_id="k").duplicate
        second.close()
        assert datasets.read("clicks", principal=ADMIN).num_rows == 10
    finally:
        catalog.close()
