"""The in-process platform: one catalog and the capability services over it.

Both the embedded ``Client()`` and ``recplane server`` run exactly this object, which is why the two behave
the same. It owns connections and writer threads, so close it (or use it as a context manager).
"""

from __future__ import annotations

from types import TracebackType

from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.ingest import IngestService
from recplane.lake import DatasetService
from recplane.quality import QualityService

__all__ = ["Runtime"]


class Runtime:
    """Catalog + dataset, ingestion and quality services for one recplane home or database."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.settings.catalog_url)
        self.datasets = DatasetService(self.catalog, self.settings)
        self.ingestion = IngestService(self.catalog, self.datasets, self.settings)
        self.quality = QualityService(self.catalog, self.datasets)

    def close(self) -> None:
        """Flush pending ingestion and release connections."""
        self.ingestion.close()
        self.catalog.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
