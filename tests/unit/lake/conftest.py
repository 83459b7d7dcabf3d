"""A dataset service on a fresh embedded home (SQLite catalog, lake in the test's tmp folder)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.lake import DatasetService


@pytest.fixture
def service(settings: Settings) -> Iterator[DatasetService]:
    """A dataset service with a SQLite catalog and a lake inside the test's tmp folder."""
    catalog = Catalog(settings.catalog_url)
    yield DatasetService(catalog, settings)
    catalog.close()
