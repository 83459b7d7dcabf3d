"""The point-in-time join engine: DuckDB over Arrow, labels processed in chunks.

For each label row (entity keys + label time ``t``) and each view:

- **Point-in-time features** take the source row with the latest event time ``≤ t`` for the same keys; ties on
  event time go to the latest created time, then (so the answer never depends on file order) to the largest
  feature values, compared column by column in the order requested. With a TTL the value must also be at most
  ``ttl`` old (event time ``≥ t - ttl``: the online store and Feast count the boundary as fresh too), else it
  is null. With ``exclude_created_after_label`` a source row only counts once it exists: both its event time
  and its created time must be ``≤ t`` (a missing created time counts as its event time), so backfilled rows
  cannot leak into earlier labels.
- **Windowed aggregations** run over the source rows of the same keys with event time in ``(t - window, t]``
  (and created time ``≤ t`` when excluding late rows). Empty windows give count 0, sum 0, mean/min/max null
  and last_n ``[]``; nulls in the aggregated column are skipped; last_n lists values oldest first.
- Labels whose keys or time are null, or whose entity has no rows, get nulls; label rows are never dropped and
  come back in their original order.

How: each view's source rows are ranked once (the tie-break order above) and reduced to one row per
(keys, visible-from time) carrying the best row visible from then on — a running maximum of the rank — so a
plain ``ASOF LEFT JOIN`` on visible-from time finds the answer even when visibility is not event-time order
(the backfill case). Aggregations are a keyed range join grouped by label row. Labels go through in chunks of
``chunk_rows``, so DuckDB's working memory is bounded by one chunk's join, not by the label count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeAlias

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from recplane.errors import InvalidInput
from recplane.features.offline.plan import OutputFeature, TrainingSetPlan, ViewPlan
from recplane.features.validation import sandboxed_duckdb

__all__ = ["DEFAULT_CHUNK_ROWS", "join_features"]

DEFAULT_CHUNK_ROWS = 250_000
SourceData: TypeAlias = "pa.Table | pads.Dataset"  # a table, or a Delta version as an Arrow dataset
_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT"}


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _micros(period: timedelta | None) -> int:
    assert period is not None
    return period // timedelta(microseconds=1)


@dataclass(frozen=True)
class _Prepared:
    """The DuckDB tables of one view, ready for the per-chunk queries."""

    plan: ViewPlan
    point_table: str
    aggregate_table: str
    aggregate_types: dict[str, str]


def join_features(
    labels: pa.Table,
    plan: TrainingSetPlan,
    sources: Mapping[str, SourceData],
    *,
    label_time_col: str = "ts",
    exclude_created_after_label: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> pa.Table:
    """``labels`` with one column per planned feature, computed point-in-time correct (see the module doc)."""
    if chunk_rows < 1:
        raise InvalidInput(f"chunk_rows must be at least 1, not {chunk_rows}.")
    _check_label_time(labels, label_time_col)
    connection = sandboxed_duckdb()
    try:
        prepared = [
            _prepare(connection, index, view, sources[view.view.name], exclude_created_after_label)
            for index, view in enumerate(plan.views)
        ]
        keys = list(dict.fromkeys(key for view in plan.views for key in view.join_keys))
        chunks = [
            _join_chunk(
                connection,
                labels.slice(start, chunk_rows),
                start,
                keys,
                label_time_col,
                prepared,
                exclude_created_after_label,
            )
            for start in range(0, max(labels.num_rows, 1), chunk_rows)
        ]
    except duckdb.Error as exc:
        raise InvalidInput(f"Computing the training set failed in DuckDB: {str(exc).splitlines()[0]}") from exc
    finally:
        connection.close()
    return pa.concat_tables(chunks) if len(chunks) > 1 else chunks[0]


def _check_label_time(labels: pa.Table, column: str) -> None:
    if column not in labels.column_names:
        raise InvalidInput(
            f"The labels have no time column {column!r} (columns: {labels.column_names}); "
            f"pass label_time_col=... to name it."
        )
    data_type = labels.schema.field(column).type
    if not (pa.types.is_timestamp(data_type) or pa.types.is_date(data_type)):
        raise InvalidInput(f"Label time column {column!r} is {data_type}; it must be a timestamp (naive means UTC).")


def _prepare(
    connection: duckdb.DuckDBPyConnection, index: int, view: ViewPlan, source: SourceData, exclude_late: bool
) -> _Prepared:
    source_name = f"source_{index}"
    connection.register(source_name, source)
    point_table, aggregate_table = f"point_{index}", f"aggregate_{index}"
    if view.point:
        connection.execute(_point_table_sql(view, source_name, point_table, exclude_late))
    types: dict[str, str] = {}
    if view.aggregations:
        connection.execute(_aggregate_table_sql(view, source_name, aggregate_table))
        described = connection.sql(f"DESCRIBE {aggregate_table}").fetchall()
        types = {str(row[0]): str(row[1]) for row in described}
    connection.unregister(source_name)
    return _Prepared(view, point_table, aggregate_table, types)


def _base_rows_sql(view: ViewPlan, source: str, columns: list[str]) -> str:
    """The usable source rows: keys, event time, created time and the given extra select items."""
    keys = ", ".join(_q(key) for key in view.join_keys)
    created = f"CAST({_q(view.created_time)} AS TIMESTAMPTZ)" if view.created_time else "CAST(NULL AS TIMESTAMPTZ)"
    not_null = " AND ".join(f"{_q(column)} IS NOT NULL" for column in (*view.join_keys, view.event_time))
    extras = "".join(f", {item}" for item in columns)
    return (
        f"SELECT {keys}, CAST({_q(view.event_time)} AS TIMESTAMPTZ) AS __et, {created} AS __ct{extras} "
        f"FROM {source} WHERE {not_null}"
    )


def _feature_value_sql(out: OutputFeature) -> str:
    feature = out.feature
    if feature.expr is not None:
        return f"({feature.expr})"
    assert feature.source_column is not None
    return _q(feature.source_column)


def _point_table_sql(view: ViewPlan, source: str, table: str, exclude_late: bool) -> str:
    """One row per (keys, visible-from time) holding the best row visible from then on."""
    if not exclude_late:
        return _latest_per_event_time_sql(view, source, table)
    values = [f"{_feature_value_sql(out)} AS __f{j}" for j, out in enumerate(view.point)]
    keys = ", ".join(_q(key) for key in view.join_keys)
    tie_break = "".join(f", __f{j} NULLS FIRST" for j in range(len(view.point)))
    visible = "greatest(__et, coalesce(__ct, __et))"
    joined = " AND ".join(f"r.{_q(key)} = b.{_q(key)}" for key in view.join_keys)
    picked = ", ".join(f"r.__f{j}" for j in range(len(view.point)))
    return f"""
        CREATE TEMP TABLE {table} AS
        WITH base AS ({_base_rows_sql(view, source, values)}),
        ranked AS (
            SELECT *, {visible} AS __vis,
                   row_number() OVER (PARTITION BY {keys} ORDER BY __et, __ct NULLS FIRST{tie_break}) AS __rk
            FROM base
        ),
        best AS (
            SELECT DISTINCT {keys}, __vis,
                   max(__rk) OVER (PARTITION BY {keys} ORDER BY __vis
                                   RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __best
            FROM ranked
        )
        SELECT {", ".join(f"b.{_q(key)}" for key in view.join_keys)}, b.__vis, r.__et, {picked}
        FROM best b JOIN ranked r ON {joined} AND r.__rk = b.__best
        ORDER BY {keys}, b.__vis
    """


def _latest_per_event_time_sql(view: ViewPlan, source: str, table: str) -> str:
    """The point table when rows are visible from their event time: the tie-break winner per (keys, event time).

    Every row at an earlier event time ranks lower, so the best row visible from ``t`` on is simply the winner of
    ``t``'s ties: one window over (keys, event time) instead of the general running maximum and self-join (2-3x
    faster on a million rows)."""
    values = [f"{_feature_value_sql(out)} AS __f{j}" for j, out in enumerate(view.point)]
    keys = ", ".join(_q(key) for key in view.join_keys)
    winner_first = "".join(f", __f{j} DESC NULLS LAST" for j in range(len(view.point)))
    picked = ", ".join(f"__f{j}" for j in range(len(view.point)))
    return f"""
        CREATE TEMP TABLE {table} AS
        WITH base AS ({_base_rows_sql(view, source, values)})
        SELECT {keys}, __et AS __vis, __et, {picked}
        FROM base
        QUALIFY row_number() OVER (PARTITION BY {keys}, __et ORDER BY __ct DESC NULLS LAST{winner_first}) = 1
        ORDER BY {keys}, __et
    """


def _aggregate_table_sql(view: ViewPlan, source: str, table: str) -> str:
    values = [f"{_q(out.feature.column)} AS __a{j}" for j, out in enumerate(view.aggregations) if out.feature.column]
    keys = ", ".join(_q(key) for key in view.join_keys)
    return f"CREATE TEMP TABLE {table} AS {_base_rows_sql(view, source, values)} ORDER BY {keys}, __et"


def _join_chunk(
    connection: duckdb.DuckDBPyConnection,
    chunk: pa.Table,
    offset: int,
    keys: list[str],
    time_col: str,
    prepared: list[_Prepared],
    exclude_late: bool,
) -> pa.Table:
    """One chunk of labels with every view's features appended, in label order."""
    probe = (
        chunk.select(keys)
        .append_column("__ts", chunk.column(time_col))
        .append_column("__row", pa.array(range(offset, offset + chunk.num_rows), pa.int64()))
    )
    connection.register("labels_chunk", probe)
    result = chunk
    try:
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE labels AS "
            "SELECT * REPLACE (CAST(__ts AS TIMESTAMPTZ) AS __ts) FROM labels_chunk"
        )
        for each in prepared:
            for query, outputs in _chunk_queries(each, exclude_late):
                columns = connection.sql(query).to_arrow_table()
                for position, name in enumerate(outputs, start=1):
                    result = result.append_column(name, columns.column(position))
    finally:
        connection.unregister("labels_chunk")
    return result


def _chunk_queries(prepared: _Prepared, exclude_late: bool) -> list[tuple[str, list[str]]]:
    view = prepared.plan
    queries = []
    if view.point:
        queries.append((_point_query(prepared), [out.output for out in view.point]))
    if view.aggregations:
        queries.append((_aggregate_query(prepared, exclude_late), [out.output for out in view.aggregations]))
    return queries


def _point_query(prepared: _Prepared) -> str:
    view = prepared.plan
    on = " AND ".join(f"l.{_q(key)} = p.{_q(key)}" for key in view.join_keys)
    fresh = f"p.__et >= l.__ts - to_microseconds({_micros(view.ttl)})" if view.ttl else None
    values = [f"CASE WHEN {fresh} THEN p.__f{j} END" if fresh else f"p.__f{j}" for j in range(len(view.point))]
    selected = ", ".join(f"{value} AS __o{j}" for j, value in enumerate(values))
    return (
        f"SELECT l.__row, {selected} FROM labels l ASOF LEFT JOIN {prepared.point_table} p "
        f"ON {on} AND l.__ts >= p.__vis ORDER BY l.__row"
    )


def _aggregate_query(prepared: _Prepared, exclude_late: bool) -> str:
    view = prepared.plan
    widest = max(_micros(out.feature.window_period) for out in view.aggregations)
    conditions = [f"l.{_q(key)} = a.{_q(key)}" for key in view.join_keys]
    conditions += ["a.__et <= l.__ts", f"a.__et > l.__ts - to_microseconds({widest})"]
    if exclude_late:
        conditions.append("coalesce(a.__ct, a.__et) <= l.__ts")
    aggregates = ", ".join(
        f"{_aggregate_sql(out, j, prepared.aggregate_types)} AS __o{j}" for j, out in enumerate(view.aggregations)
    )
    return (
        f"SELECT l.__row, {aggregates} FROM labels l LEFT JOIN {prepared.aggregate_table} a "
        f"ON {' AND '.join(conditions)} GROUP BY l.__row ORDER BY l.__row"
    )


def _aggregate_sql(out: OutputFeature, index: int, types: dict[str, str]) -> str:
    feature = out.feature
    in_window = f"a.__et > l.__ts - to_microseconds({_micros(feature.window_period)})"
    value = f"a.__a{index}"
    if feature.agg == "count":
        counted = value if feature.column else "a.__et"
        return f"count({counted}) FILTER (WHERE {in_window})"
    if feature.agg == "sum":
        total = f"coalesce(sum({value}) FILTER (WHERE {in_window}), 0)"
        return f"CAST({total} AS BIGINT)" if types.get(f"__a{index}") in _INTEGERS else total
    if feature.agg == "mean":
        return f"avg({value}) FILTER (WHERE {in_window})"
    if feature.agg in ("min", "max"):
        return f"{feature.agg}({value}) FILTER (WHERE {in_window})"
    newest_first = f"list({value} ORDER BY a.__et DESC, a.__ct DESC NULLS LAST, {value} DESC) "
    listed = f"{newest_first}FILTER (WHERE {in_window} AND {value} IS NOT NULL)"
    empty = f"CAST([] AS {types[f'__a{index}']}[])"
    return f"coalesce(list_reverse(list_slice({listed}, 1, {feature.n})), {empty})"
