"""The catalog: recplane's metadata database (SQLite embedded, PostgreSQL in production)."""

from recplane.catalog.database import Catalog, current_revision, downgrade, head_revision, migrate
from recplane.catalog.tables import (
    ApiToken,
    DatasetRecord,
    IngestBatch,
    QualityReportRecord,
    SchemaVersion,
    utcnow,
)

__all__ = [
    "ApiToken",
    "Catalog",
    "DatasetRecord",
    "IngestBatch",
    "QualityReportRecord",
    "SchemaVersion",
    "current_revision",
    "downgrade",
    "head_revision",
    "migrate",
    "utcnow",
]
