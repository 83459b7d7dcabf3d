"""Versioned datasets on Delta Lake: specs, tables, the dataset service and what it answers."""

from recplane.lake.datasets import REJECTED_SUFFIX, DatasetService, OpenDataset, rejected_name
from recplane.lake.evolution import SchemaPlan, plan_schema_change
from recplane.lake.info import (
    ColumnStats,
    DatasetInfo,
    DatasetStats,
    DatasetVersion,
    MaintenanceResult,
    SchemaChangeResult,
    WidenedColumn,
)
from recplane.lake.spec import ColumnSpec, DatasetSpec, load_spec
from recplane.lake.table import DeltaDataset

__all__ = [
    "REJECTED_SUFFIX",
    "ColumnSpec",
    "ColumnStats",
    "DatasetInfo",
    "DatasetService",
    "DatasetSpec",
    "DatasetStats",
    "DatasetVersion",
    "DeltaDataset",
    "MaintenanceResult",
    "OpenDataset",
    "SchemaChangeResult",
    "SchemaPlan",
    "WidenedColumn",
    "load_spec",
    "plan_schema_change",
    "rejected_name",
]
