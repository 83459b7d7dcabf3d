"""Dataset statistics: size from the Delta log, per-column profile from one DuckDB scan.

File count and bytes come from the add actions of the version (no data read). The column profile (null
rate, min/max, approximate distinct count) is one aggregate query that DuckDB streams over the Arrow
dataset, so memory stays flat however large the table is. Min/max are skipped for nested types (lists,
maps, vectors) and binary, where an order means little; NaN is ignored in float min/max.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from recplane.lake.info import ColumnStats, DatasetStats, JsonScalar
from recplane.lake.spec import type_string

__all__ = ["dataset_stats"]


def _has_order(data_type: pa.DataType) -> bool:
    nested = pa.types.is_nested(data_type) or pa.types.is_map(data_type)
    return not (nested or pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type))


def _aggregates(index: int, name: str, data_type: pa.DataType) -> list[str]:
    column = f'"{name}"'
    parts = [f'count({column}) AS "nn_{index}"', f'approx_count_distinct({column}) AS "nd_{index}"']
    if _has_order(data_type):
        no_nan = f" FILTER (WHERE NOT isnan({column}))" if pa.types.is_floating(data_type) else ""
        parts += [f'min({column}){no_nan} AS "lo_{index}"', f'max({column}){no_nan} AS "hi_{index}"']
    return parts


def _json_scalar(value: Any) -> JsonScalar:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _profile(dataset: Any, schema: pa.Schema) -> tuple[int, dict[str, Any]]:
    """Run the one aggregate query; returns the row count and the named aggregates."""
    selects = ['count(*) AS "rows"']
    for index, field in enumerate(schema):
        selects += _aggregates(index, field.name, field.type)
    connection = duckdb.connect()
    try:
        connection.register("dataset", dataset)
        row = connection.sql(f"SELECT {', '.join(selects)} FROM dataset").to_arrow_table().to_pylist()[0]
    finally:
        connection.close()
    return int(row.pop("rows")), row


def _column_stats(index: int, field: pa.Field, rows: int, aggregates: dict[str, Any]) -> ColumnStats:
    nulls = rows - int(aggregates[f"nn_{index}"])
    return ColumnStats(
        name=field.name,
        type=type_string(field.type),
        null_count=nulls,
        null_rate=nulls / rows if rows else 0.0,
        min=_json_scalar(aggregates.get(f"lo_{index}")),
        max=_json_scalar(aggregates.get(f"hi_{index}")),
        distinct_estimate=int(aggregates[f"nd_{index}"]),
    )


def dataset_stats(name: str, snapshot: DeltaTable, logical: pa.Schema) -> DatasetStats:
    """Rows, bytes, files and a per-column profile of ``snapshot`` (columns typed by ``logical``)."""
    stored = pa.schema(snapshot.schema().to_arrow())
    fields = [field for field in logical if field.name in stored.names]
    actions = pa.table(snapshot.get_add_actions(flatten=False))
    rows, aggregates = _profile(snapshot.to_pyarrow_dataset(), pa.schema(fields))
    return DatasetStats(
        name=name,
        version=snapshot.version(),
        rows=rows,
        bytes=int(pc.sum(actions["size_bytes"]).as_py() or 0),
        files=actions.num_rows,
        columns=[_column_stats(index, field, rows, aggregates) for index, field in enumerate(fields)],
    )
