"""A quality service over a fresh embedded home (SQLite catalog, lake in the test's tmp folder)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.fixtures.quality import QualityLake

from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.lake import DatasetService
from recplane.quality import QualityService


@pytest.fixture
def lake(settings: Settings) -> Iterator[QualityLake]:
    """Dataset and quality services on a SQLite catalog and a lake in the test's tmp folder."""
    catalog = Catalog(settings.catalog_url)
    datasets = DatasetService(catalog, settings)
    yield QualityLake(datasets, QualityService(catalog, datasets))
    catalog.close()
