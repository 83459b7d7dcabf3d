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

How: each view's source rows are reduced once to one row per (keys, visible-from time) carrying the best row
visible from then on, so a plain ``ASOF LEFT JOIN`` on visible-from time finds the answer. When rows are visible
from their event time this is the tie-break winner of each (keys, event time); only the few tied groups are
ranked (a hash aggregate finds them), which is several times cheaper than ranking every row. With
``exclude_created_after_label`` visibility is not event-time order (backfills), and a running maximum of the rank
gives the best row visible from each time. Aggregations are a keyed range join grouped by label row.

Source rows newer than the newest label can never be chosen and are dropped while scanning (a filter DuckDB
pushes into the Arrow scan, so partitioned or ordered data skips whole files); when the labels fit one chunk, only
source rows of their entities are kept too. Labels go through in chunks of at most ``chunk_rows``, so DuckDB's
working memory is bounded by one chunk's join, not by the label count: the labels are ordered by the view's
first key and cut into consecutive runs, and each run joins only the source rows in its key range, so every
source row is sorted for the ASOF join about once in total rather than once per chunk. The answers are put back
in label order at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TypeAlias

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from recplane.errors import InvalidInput, RecplaneError
from recplane.features.offline.plan import OutputFeature, TrainingSetPlan, ViewPlan
from recplane.features.validation import sandboxed_duckdb

__all__ = ["DEFAULT_CHUNK_ROWS", "join_features", "latest_point_values", "time_scalar"]

DEFAULT_CHUNK_ROWS = 250_000
SourceData: TypeAlias = "pa.Table | pads.Dataset"  # a table, or a Delta version as an Arrow dataset
_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT"}
_LABELS = "labels_all"


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _micros(period: timedelta | None) -> int:
    assert period is not None
    return period // timedelta(microseconds=1)


def _labels_sql(name: str) -> str:
    """A registered label probe with its time as TIMESTAMPTZ (naive times and dates are UTC)."""
    return f"(SELECT * REPLACE (CAST(__ts AS TIMESTAMPTZ) AS __ts) FROM {name})"


def _time_literal(moment: datetime) -> str:
    return f"CAST('{moment.astimezone(UTC).isoformat()}' AS TIMESTAMPTZ)"


def _source_event_time(view: ViewPlan) -> str:
    """A source row's event time, in a condition of the base rows."""
    return f"CAST(__s.{_q(view.event_time)} AS TIMESTAMPTZ)"


@dataclass(frozen=True)
class _Scope:
    """Which source rows the labels can use: event times up to the newest label, and (when the labels are few)
    only their entities' rows."""

    oldest: datetime | None
    newest: datetime | None
    labels: pa.Table | None
    """The label probe when the source rows can be cut to the labels' entities (few labels), else None."""

    def arrow_filter(self, view: ViewPlan, schema: pa.Schema) -> tuple[pc.Expression | None, bool]:
        """The bounds as an Arrow filter for the Parquet reader, and whether it includes the entity cut (a single
        key of the same type in labels and source, so Arrow and DuckDB agree on equality)."""
        bounds = []
        if self.newest is not None and view.event_time in schema.names:
            newest = time_scalar(self.newest, schema.field(view.event_time).type)
            if newest is not None:
                bounds.append(pc.field(view.event_time) <= newest)
        entities = self._label_keys(view, schema)
        if entities is not None:
            bounds.append(pc.field(view.join_keys[0]).isin(entities))
        combined = None
        for bound in bounds:
            combined = bound if combined is None else combined & bound
        return combined, entities is not None

    def _label_keys(self, view: ViewPlan, schema: pa.Schema) -> pa.Array | None:
        if self.labels is None or len(view.join_keys) != 1 or view.join_keys[0] not in schema.names:
            return None
        key = view.join_keys[0]
        labelled, stored = self.labels.schema.field(key).type, schema.field(key).type
        keys = pc.unique(self.labels.column(key)).drop_null()
        if labelled == stored:
            return keys
        if not (pa.types.is_integer(labelled) and pa.types.is_integer(stored)):
            return None
        try:
            return keys.cast(stored)  # integers of another width compare equal in DuckDB too
        except pa.ArrowInvalid:  # a label key the source type cannot hold: let DuckDB do the cut
            return None

    def conditions(self, view: ViewPlan, lookback: timedelta | None = None, *, entities_cut: bool) -> list[str]:
        """SQL conditions on a source row (``__s``) that every row the labels can use passes (``entities_cut``:
        the source holds the labels' entities only already)."""
        if self.newest is None or self.oldest is None:
            return ["FALSE"]  # no label has a time: every feature is null
        event = _source_event_time(view)
        conditions = [f"{event} <= {_time_literal(self.newest)}"]
        if lookback is not None:
            conditions.append(f"{event} > {_time_literal(self.oldest)} - to_microseconds({_micros(lookback)})")
        if self.labels is not None and not entities_cut:
            same = " AND ".join(f"l.{_q(key)} = __s.{_q(key)}" for key in view.join_keys)
            conditions.append(f"EXISTS (SELECT 1 FROM {_LABELS} l WHERE {same})")
        return conditions


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
    keys = list(dict.fromkeys(key for view in plan.views for key in view.join_keys))
    probe = (
        labels.select(keys)
        .append_column("__ts", labels.column(label_time_col))
        .append_column("__row", pa.array(np.arange(labels.num_rows, dtype=np.int64)))
    )
    connection = sandboxed_duckdb()
    try:
        connection.register(_LABELS, probe)
        scope = _scope(connection, probe, entities_only=labels.num_rows <= chunk_rows)
        columns: list[tuple[str, pa.ChunkedArray]] = []
        for index, view in enumerate(plan.views):
            prepared = _prepare(connection, index, view, sources[view.view.name], exclude_created_after_label, scope)
            columns += _view_columns(connection, prepared, probe, chunk_rows, exclude_created_after_label)
    except duckdb.Error as exc:
        raise InvalidInput(f"Computing the training set failed in DuckDB: {str(exc).splitlines()[0]}") from exc
    finally:
        connection.close()
    result = labels
    for name, column in columns:
        result = result.append_column(name, column)
    return result


def _check_label_time(labels: pa.Table, column: str) -> None:
    if column not in labels.column_names:
        raise InvalidInput(
            f"The labels have no time column {column!r} (columns: {labels.column_names}); "
            f"pass label_time_col=... to name it."
        )
    data_type = labels.schema.field(column).type
    if not (pa.types.is_timestamp(data_type) or pa.types.is_date(data_type)):
        raise InvalidInput(f"Label time column {column!r} is {data_type}; it must be a timestamp (naive means UTC).")


def _scope(connection: duckdb.DuckDBPyConnection, probe: pa.Table, *, entities_only: bool) -> _Scope:
    # As µs since the epoch: fetching TIMESTAMPTZ values into Python would need pytz.
    query = f"SELECT epoch_us(min(__ts)), epoch_us(max(__ts)) FROM {_labels_sql(_LABELS)}"
    ((oldest, newest),) = connection.sql(query).fetchall()
    return _Scope(_from_micros(oldest), _from_micros(newest), probe if entities_only else None)


def _from_micros(micros: int | None) -> datetime | None:
    return None if micros is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _prepare(
    connection: duckdb.DuckDBPyConnection,
    index: int,
    view: ViewPlan,
    source: SourceData,
    exclude_late: bool,
    scope: _Scope,
) -> _Prepared:
    source_name = f"source_{index}"
    rows, entities_cut = _in_memory(view, source, scope)
    connection.register(source_name, rows)
    point_table, aggregate_table = f"point_{index}", f"aggregate_{index}"
    if view.point:
        conditions = scope.conditions(view, entities_cut=entities_cut)
        base = _base_rows_sql(view, source_name, _point_values(view), conditions)
        connection.execute(_point_table_sql(view, base, point_table, exclude_late))
    types: dict[str, str] = {}
    if view.aggregations:
        conditions = scope.conditions(view, _widest(view), entities_cut=entities_cut)
        base = _base_rows_sql(view, source_name, _aggregate_values(view), conditions)
        connection.execute(f"CREATE TEMP TABLE {aggregate_table} AS {base}")
        described = connection.sql(f"DESCRIBE {aggregate_table}").fetchall()
        types = {str(row[0]): str(row[1]) for row in described}
    connection.unregister(source_name)
    return _Prepared(view, point_table, aggregate_table, types)


def _in_memory(view: ViewPlan, source: SourceData, scope: _Scope) -> tuple[pa.Table, bool]:
    """The source as a table of the columns the view reads and the rows the labels can use, and whether those
    rows are cut to the labels' entities already.

    A Delta version's dataset is read once, by the Parquet reader (projection and filter pushed down, row groups
    decoded in parallel): DuckDB then scans memory, several times faster than pulling the dataset through its
    Arrow scan (one thread per row group) for each of the queries below."""
    bounds, entities_cut = scope.arrow_filter(view, source.schema)
    if isinstance(source, pa.Table):
        return (source if bounds is None else source.filter(bounds)), entities_cut
    names = source.schema.names
    wanted = [name for name in names if name in _read_columns(view, names)]
    return source.to_table(columns=wanted, filter=bounds), entities_cut


def _read_columns(view: ViewPlan, available: list[str]) -> set[str]:
    """Columns a view reads: all when a SQL expression may name any, else keys, times and feature columns."""
    features = [out.feature for out in (*view.point, *view.aggregations)]
    if any(feature.expr is not None for feature in features):
        return set(available)
    return {*view.source_columns, *(f.source_column for f in features if f.source_column)}


def time_scalar(moment: datetime, data_type: pa.DataType) -> pa.Scalar | None:
    """``moment`` as a scalar comparable with a column of ``data_type`` (naive timestamps are UTC; dates compare
    by day), for Arrow filters; None when the type holds no time."""
    if pa.types.is_timestamp(data_type):
        value = moment if data_type.tz else moment.astimezone(UTC).replace(tzinfo=None)
        return pa.scalar(value, pa.timestamp("us", data_type.tz)).cast(data_type, safe=False)
    if pa.types.is_date(data_type):
        return pa.scalar(moment.astimezone(UTC).date(), data_type)
    return None


def _base_rows_sql(view: ViewPlan, source: str, columns: list[str], conditions: list[str]) -> str:
    """The usable source rows (``__s``): keys, event time, created time and the given extra select items."""
    keys = ", ".join(_q(key) for key in view.join_keys)
    created = f"CAST({_q(view.created_time)} AS TIMESTAMPTZ)" if view.created_time else "CAST(NULL AS TIMESTAMPTZ)"
    not_null = [f"{_q(column)} IS NOT NULL" for column in (*view.join_keys, view.event_time)]
    extras = "".join(f", {item}" for item in columns)
    return (
        f"SELECT {keys}, CAST({_q(view.event_time)} AS TIMESTAMPTZ) AS __et, {created} AS __ct{extras} "
        f"FROM {source} AS __s WHERE {' AND '.join([*not_null, *conditions])}"
    )


def _feature_value_sql(out: OutputFeature) -> str:
    feature = out.feature
    if feature.expr is not None:
        return f"({feature.expr})"
    assert feature.source_column is not None
    return _q(feature.source_column)


def _point_values(view: ViewPlan) -> list[str]:
    return [f"{_feature_value_sql(out)} AS __f{j}" for j, out in enumerate(view.point)]


def _aggregate_values(view: ViewPlan) -> list[str]:
    return [f"{_q(out.feature.column)} AS __a{j}" for j, out in enumerate(view.aggregations) if out.feature.column]


def _widest(view: ViewPlan) -> timedelta:
    return max(out.feature.window_period or timedelta(0) for out in view.aggregations)


def _winner_first(view: ViewPlan, prefix: str = "") -> str:
    """The tie-break at equal event time, best first: latest created time, then the largest feature values."""
    values = "".join(f", {prefix}__f{j} DESC NULLS LAST" for j in range(len(view.point)))
    return f"{prefix}__ct DESC NULLS LAST{values}"


def _point_table_sql(view: ViewPlan, base: str, table: str, exclude_late: bool) -> str:
    """One row per (keys, visible-from time) holding the best row visible from then on."""
    if not exclude_late:
        return _latest_per_event_time_sql(view, base, table)
    keys = ", ".join(_q(key) for key in view.join_keys)
    tie_break = "".join(f", __f{j} NULLS FIRST" for j in range(len(view.point)))
    visible = "greatest(__et, coalesce(__ct, __et))"
    joined = " AND ".join(f"r.{_q(key)} = b.{_q(key)}" for key in view.join_keys)
    picked = ", ".join(f"r.__f{j}" for j in range(len(view.point)))
    return f"""
        CREATE TEMP TABLE {table} AS
        WITH base AS ({base}),
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
    """


def _latest_per_event_time_sql(view: ViewPlan, base: str, table: str) -> str:
    """The point table when rows are visible from their event time: the tie-break winner per (keys, event time).

    Every row at an earlier event time ranks lower, so the best row visible from ``t`` on is simply the winner of
    ``t``'s ties. Most (keys, event time) groups hold one row: a hash aggregate finds the tied groups, and only
    their rows are ranked (2-3x cheaper than a window over every row)."""
    keys = ", ".join(_q(key) for key in view.join_keys)
    picked = ", ".join(f"__f{j}" for j in range(len(view.point)))
    return f"""
        CREATE TEMP TABLE {table} AS
        WITH base AS MATERIALIZED ({base}),
        tied AS (SELECT {keys}, __et FROM base GROUP BY {keys}, __et HAVING count(*) > 1)
        SELECT {keys}, __et AS __vis, __et, {picked} FROM base ANTI JOIN tied USING ({keys}, __et)
        UNION ALL
        SELECT {keys}, __et AS __vis, __et, {picked} FROM (
            SELECT * FROM base SEMI JOIN tied USING ({keys}, __et)
            QUALIFY row_number() OVER (PARTITION BY {keys}, __et ORDER BY {_winner_first(view)}) = 1
        )
    """


def _view_columns(
    connection: duckdb.DuckDBPyConnection, prepared: _Prepared, probe: pa.Table, chunk_rows: int, exclude_late: bool
) -> list[tuple[str, pa.ChunkedArray]]:
    """Every output column of one view, in label order."""
    queries = _chunk_queries(prepared, exclude_late)
    parts: list[list[pa.Table]] = [[] for _ in queries]
    for labels, in_range, params in _label_chunks(connection, prepared.plan, probe.num_rows, chunk_rows):
        for part, (query, _) in zip(parts, queries, strict=True):
            part.append(connection.sql(query(labels, in_range), params=params).to_arrow_table())
    columns: list[tuple[str, pa.ChunkedArray]] = []
    for part, (_, outputs) in zip(parts, queries, strict=True):
        answered = _in_label_order(pa.concat_tables(part), probe.num_rows)
        columns += [(name, answered.column(position)) for position, name in enumerate(outputs, start=1)]
    return columns


def _label_chunks(
    connection: duckdb.DuckDBPyConnection, view: ViewPlan, labels: int, chunk_rows: int
) -> list[tuple[str, str, list[object]]]:
    """(labels relation, condition on the source rows, its parameters) per chunk.

    Chunks are ranges of the view's first key cut at its quantiles over the labels, so each one joins only the
    source rows of its range; a chunk holds about ``chunk_rows`` labels (more only when one key value has
    that many labels on its own). Labels with a null key go with the last chunk and match nothing."""
    if labels <= chunk_rows:
        return [(_labels_sql(_LABELS), "TRUE", [])]
    first = _q(view.join_keys[0])
    parts = -(-labels // chunk_rows)
    fractions = ", ".join(str(part / parts) for part in range(1, parts))
    cuts = connection.sql(f"SELECT quantile_disc({first}, [{fractions}]) FROM {_LABELS}").to_arrow_table()
    inner = cuts.column(0)[0].as_py()
    if inner is None:  # every key is null: nothing matches, one pass answers all
        return [(_labels_sql(_LABELS), "FALSE", [])]
    chunks = []
    for low, high in pairwise([None, *inner, None]):
        conditions, params = [], []
        if low is not None:
            params.append(low)
            conditions.append(f"{first} >= ${len(params)}")
        if high is not None:
            params.append(high)
            conditions.append(f"{first} < ${len(params)}")
        in_range = " AND ".join(conditions)
        chosen = in_range if high is not None else f"({in_range} OR {first} IS NULL)"
        relation = f"(SELECT * REPLACE (CAST(__ts AS TIMESTAMPTZ) AS __ts) FROM {_LABELS} WHERE {chosen})"
        chunks.append((relation, in_range, params))
    return chunks


def _in_label_order(answers: pa.Table, rows: int) -> pa.Table:
    """``answers`` (one row per label, any order, ``__row`` first) rearranged into label order."""
    if answers.num_rows != rows:  # every query answers each label once; anything else is a recplane bug
        raise RecplaneError(f"The training-set engine answered {answers.num_rows} rows for {rows} labels.")
    positions = np.empty(rows, dtype=np.int64)
    positions[answers.column(0).to_numpy()] = np.arange(rows, dtype=np.int64)
    return answers.take(positions)


QueryFor: TypeAlias = "Callable[[str, str], str]"


def _chunk_queries(prepared: _Prepared, exclude_late: bool) -> list[tuple[QueryFor, list[str]]]:
    """Per query a builder (labels relation, source condition) -> SQL, and the output columns it answers."""
    view = prepared.plan
    queries: list[tuple[QueryFor, list[str]]] = []
    if view.point:
        queries.append(
            (lambda labels, in_range: _point_query(prepared, labels, in_range), [out.output for out in view.point])
        )
    if view.aggregations:
        queries.append(
            (
                lambda labels, in_range: _aggregate_query(prepared, labels, in_range, exclude_late),
                [out.output for out in view.aggregations],
            )
        )
    return queries


def _point_query(prepared: _Prepared, labels: str, in_range: str) -> str:
    view = prepared.plan
    on = " AND ".join(f"l.{_q(key)} = p.{_q(key)}" for key in view.join_keys)
    fresh = f"p.__et >= l.__ts - to_microseconds({_micros(view.ttl)})" if view.ttl else None
    values = [f"CASE WHEN {fresh} THEN p.__f{j} END" if fresh else f"p.__f{j}" for j in range(len(view.point))]
    selected = ", ".join(f"{value} AS __o{j}" for j, value in enumerate(values))
    return (
        f"SELECT l.__row, {selected} FROM {labels} l "
        f"ASOF LEFT JOIN (SELECT * FROM {prepared.point_table} WHERE {in_range}) p ON {on} AND l.__ts >= p.__vis"
    )


def _aggregate_query(prepared: _Prepared, labels: str, in_range: str, exclude_late: bool) -> str:
    view = prepared.plan
    conditions = [f"l.{_q(key)} = a.{_q(key)}" for key in view.join_keys]
    conditions += ["a.__et <= l.__ts", f"a.__et > l.__ts - to_microseconds({_micros(_widest(view))})"]
    if exclude_late:
        conditions.append("coalesce(a.__ct, a.__et) <= l.__ts")
    aggregates = ", ".join(
        f"{_aggregate_sql(out, j, prepared.aggregate_types)} AS __o{j}" for j, out in enumerate(view.aggregations)
    )
    return (
        f"SELECT l.__row, {aggregates} FROM {labels} l "
        f"LEFT JOIN (SELECT * FROM {prepared.aggregate_table} WHERE {in_range}) a "
        f"ON {' AND '.join(conditions)} GROUP BY l.__row"
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


def latest_point_values(view: ViewPlan, source: SourceData, as_of: datetime) -> pa.Table:
    """Per entity with a source row at or before ``as_of``: its keys and the point features a training-set label
    at ``as_of`` would get (same ranking and expressions; TTL not applied), ordered by keys. What materialization
    stores."""
    if not view.point:
        raise InvalidInput(f"Feature view {view.view.name!r} has no point-in-time features to look up.")
    keys = ", ".join(_q(key) for key in view.join_keys)
    up_to = f"{_source_event_time(view)} <= {_time_literal(as_of)}"
    base = _base_rows_sql(view, "source", _point_values(view), [up_to])
    outputs = ", ".join(f"__f{j} AS {_q(out.output)}" for j, out in enumerate(view.point))
    query = f"""
        WITH base AS MATERIALIZED ({base}),
        newest AS (SELECT {keys}, max(__et) AS __et FROM base GROUP BY {keys})
        SELECT {keys}, {outputs} FROM (SELECT * FROM base SEMI JOIN newest USING ({keys}, __et))
        QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {_winner_first(view)}) = 1
        ORDER BY {keys}
    """
    connection = sandboxed_duckdb()
    try:
        connection.register("source", source)
        return connection.sql(query).to_arrow_table()
    except duckdb.Error as exc:
        raise InvalidInput(f"Computing the latest feature values failed in DuckDB: {str(exc).splitlines()[0]}") from exc
    finally:
        connection.close()
