"""An embedded home with a dataset service, an ingestion service and an ``events`` dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest

from recplane.auth import ADMIN
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.ingest import IngestService, Validator
from recplane.ingest.sources import RowChunk
from recplane.lake import DatasetService, DatasetSpec, load_spec

EVENTS_SPEC: dict[str, Any] = {
    "name": "events",
    "team": "recsys",
    "event_time": "ts",
    "columns": {
        "user_id": {"type": "int64", "nullable": False},
        "item_id": "int64",
        "rating": "float32",
        "ts": "timestamp",
        "tags": "list<string>",
    },
}


def events_spec(**changes: Any) -> DatasetSpec:
    """The ``events`` spec; keyword arguments replace top-level fields."""
    return load_spec({**EVENTS_SPEC, **changes})


def event_rows(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """Valid rows with user ids ``start .. start+count-1``."""
    return [
        {"user_id": i, "item_id": i % 7, "rating": 1.5, "ts": "2026-01-01T00:00:00Z", "tags": ["a"]}
        for i in range(start, start + count)
    ]


def storage_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Valid rows of ``events`` in its storage schema (as a committed batch holds them)."""
    return Validator(events_spec()).validate_rows(RowChunk(rows)).accepted


@dataclass
class Home:
    """One embedded installation: catalog, dataset service and a factory for ingestion services."""

    settings: Settings
    catalog: Catalog
    datasets: DatasetService
    services: list[IngestService]

    def ingestion(self, **overrides: Any) -> IngestService:
        """A new ingestion service (a fresh process, as far as ingestion state goes)."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        service = IngestService(self.catalog, self.datasets, settings)
        self.services.append(service)
        return service

    def rows(self, name: str = "events", **kwargs: Any) -> pa.Table:
        """Rows of a dataset (newest version unless ``version=``)."""
        return self.datasets.read(name, principal=ADMIN, **kwargs)

    def commits(self, name: str = "events") -> list[Any]:
        """Appends to a dataset, newest first."""
        return [v for v in self.datasets.history(name, principal=ADMIN) if v.operation == "append"]


@pytest.fixture
def home(settings: Settings) -> Iterator[Home]:
    """An embedded home holding the ``events`` dataset (and ``events__rejected``)."""
    catalog = Catalog(settings.catalog_url)
    datasets = DatasetService(catalog, settings)
    datasets.create(events_spec(), principal=ADMIN)
    state = Home(settings, catalog, datasets, [])
    yield state
    for service in state.services:
        service.close()
    catalog.close()


@pytest.fixture
def ingestion(home: Home) -> IngestService:
    """An ingestion service on the home (closed after the test)."""
    return home.ingestion()


@pytest.fixture
def user_ids() -> Callable[[pa.Table], list[int]]:
    """Sorted user ids of a table."""
    return lambda table: sorted(table.column("user_id").to_pylist())
