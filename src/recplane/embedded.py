"""The embedded client: the whole platform in this process, acting as the local administrator."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from recplane.auth import ADMIN
from recplane.config import Settings
from recplane.runtime import Runtime

if TYPE_CHECKING:
    import pandas as pd

    from recplane.ingest import IngestResult
    from recplane.lake import DatasetInfo, DatasetSpec, DatasetStats, DatasetVersion, MaintenanceResult
    from recplane.lake.info import SchemaChangeResult
    from recplane.quality import QualityReport

__all__ = ["EmbeddedClient"]


class EmbeddedClient:
    """Client() without a URL: runs against RECPLANE_HOME (SQLite catalog, local Delta tables)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(self.settings)
        self._principal = ADMIN

    @property
    def mode(self) -> str:
        return "embedded"

    def close(self) -> None:
        self.runtime.close()

    def create_dataset(self, spec: DatasetSpec | dict[str, Any] | str | Path) -> DatasetInfo:
        from recplane.lake import load_spec

        return self.runtime.datasets.create(load_spec(spec), principal=self._principal)

    def apply_dataset(self, spec: DatasetSpec | dict[str, Any] | str | Path) -> SchemaChangeResult:
        from recplane.lake import load_spec

        return self.runtime.datasets.apply(load_spec(spec), principal=self._principal)

    def get_dataset(self, name: str) -> DatasetInfo:
        return self.runtime.datasets.get(name, principal=self._principal)

    def list_datasets(self) -> list[DatasetInfo]:
        return self.runtime.datasets.list(principal=self._principal)

    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        as_of: datetime | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        return self.runtime.datasets.read(
            name, principal=self._principal, version=version, as_of=as_of, columns=columns
        )

    def history(self, name: str) -> list[DatasetVersion]:
        return self.runtime.datasets.history(name, principal=self._principal)

    def stats(self, name: str, *, version: int | None = None) -> DatasetStats:
        return self.runtime.datasets.stats(name, principal=self._principal, version=version)

    def compact(self, name: str) -> MaintenanceResult:
        return self.runtime.datasets.compact(name, principal=self._principal)

    def enforce_retention(self, name: str) -> MaintenanceResult:
        return self.runtime.datasets.enforce_retention(name, principal=self._principal)

    def ingest(
        self,
        name: str,
        data: list[dict[str, Any]] | pa.Table | pa.RecordBatchReader | pd.DataFrame | str | Path,
        *,
        batch_id: str | None = None,
    ) -> IngestResult:
        return self.runtime.ingestion.ingest(name, data, principal=self._principal, batch_id=batch_id)

    def check(
        self, name: str, *, version: int | None = None, reference_version: int | None = None
    ) -> QualityReport:
        return self.runtime.quality.check(
            name, principal=self._principal, version=version, reference_version=reference_version
        )

    def quality_reports(self, name: str, *, limit: int = 20) -> list[QualityReport]:
        return self.runtime.quality.reports(name, principal=self._principal, limit=limit)
