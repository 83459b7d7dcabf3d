"""Checks a set of feature definitions against each other and against the datasets they read.

Pure over plain data: the caller passes each source dataset's columns (a :class:`SourceSchema`), so these
rules run without a catalog. Every problem names the object and the field, and all problems are reported
at once. Feature views read datasets only; a view whose source names another view is refused (there is no
view-on-view, hence no cycles to detect).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from recplane.errors import InvalidSpec
from recplane.features.spec import Entity, Feature, FeatureDefinitions, FeatureService, FeatureView, parse_feature_ref

__all__ = ["SourceSchema", "expression_type", "sandboxed_duckdb", "validate_definitions", "view_join_keys"]

RESERVED_PREFIX = "__"
_WINDOW_FUNCTION = re.compile(r"\bover\b\s*(\(|[a-z_])", re.IGNORECASE)


@dataclass(frozen=True)
class SourceSchema:
    """What validation needs to know about a source dataset: its columns and declared event time."""

    columns: dict[str, pa.DataType]
    event_time: str | None = None


SchemaLookup = Callable[[str], SourceSchema | None]


def sandboxed_duckdb() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that cannot touch files or change that: feature SQL is user-written."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone='UTC'")
    connection.execute("SET enable_external_access=false")
    connection.execute("SET enable_progress_bar=false")  # DuckDB's own bar would print into the CLI's output
    connection.execute("SET lock_configuration=true")
    return connection


def expression_type(expr: str, columns: dict[str, pa.DataType]) -> pa.DataType:
    """The Arrow type a row-level SQL expression yields over these columns; InvalidSpec when it is not one."""
    if ";" in expr:
        raise InvalidSpec(f"expression {expr!r} may not contain ';'")
    if _WINDOW_FUNCTION.search(expr):
        raise InvalidSpec(f"expression {expr!r} uses a window function; use agg with a window instead")
    empty = pa.schema([pa.field(name, data_type) for name, data_type in columns.items()]).empty_table()
    connection = sandboxed_duckdb()
    try:
        connection.register("source_row", empty)
        result = connection.sql(f"SELECT ({expr}) AS value FROM source_row").to_arrow_table()
    except duckdb.Error as exc:
        raise InvalidSpec(f"expression {expr!r} does not work on the source row: {_first_line(exc)}") from exc
    finally:
        connection.close()
    if result.num_rows:
        raise InvalidSpec(f"expression {expr!r} aggregates rows; a feature expression works on one row at a time")
    return result.schema.field("value").type


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def view_join_keys(view: FeatureView, entities: dict[str, Entity]) -> list[str]:
    """The join key columns of a view: its entities' keys, in order."""
    return [key for name in view.entities for key in entities[name].join_keys]


def validate_definitions(definitions: FeatureDefinitions, schema_of: SchemaLookup) -> None:
    """Raise InvalidSpec listing every problem of ``definitions`` (which must be complete: what views refer to)."""
    definitions.check_unique_names()
    problems: list[str] = []
    entities = {entity.name: entity for entity in definitions.entities}
    views = {view.name: view for view in definitions.feature_views}
    for view in definitions.feature_views:
        problems += _view_problems(view, entities, set(views), schema_of)
    for service in definitions.feature_services:
        problems += _service_problems(service, views)
    if problems:
        shown = "\n  - ".join(problems)
        raise InvalidSpec(
            f"{len(problems)} problem(s) in the feature definitions:\n  - {shown}", details={"problems": problems}
        )


def _view_problems(
    view: FeatureView, entities: dict[str, Entity], view_names: set[str], schema_of: SchemaLookup
) -> list[str]:
    where = f"feature view {view.name!r}"
    unknown = [name for name in view.entities if name not in entities]
    if unknown:
        return [f"{where}: entities: unknown entity {unknown}; define it, known entities are {sorted(entities)}"]
    source = schema_of(view.source)
    if source is None:
        if view.source in view_names:
            return [f"{where}: source: {view.source!r} is a feature view; views read datasets, not other views"]
        return [f"{where}: source: no dataset named {view.source!r}; create it first (recplane datasets create)"]
    problems = _key_problems(view, entities, source, where)
    problems += _time_problems(view, source, where)
    keys = set(view_join_keys(view, entities))
    for feature in view.features:
        problems += [f"{where}: features.{feature.name}: {p}" for p in _feature_problems(feature, source, keys)]
    return problems


def _key_problems(view: FeatureView, entities: dict[str, Entity], source: SourceSchema, where: str) -> list[str]:
    keys = view_join_keys(view, entities)
    problems = []
    shared = sorted({key for key in keys if keys.count(key) > 1})
    if shared:
        problems.append(f"{where}: entities: join key(s) {shared} belong to more than one of {view.entities}")
    missing = [key for key in dict.fromkeys(keys) if key not in source.columns]
    if missing:
        problems.append(
            f"{where}: entities: join key(s) {missing} are not columns of dataset {view.source!r} "
            f"(columns: {sorted(source.columns)})"
        )
    return problems


def _time_problems(view: FeatureView, source: SourceSchema, where: str) -> list[str]:
    problems = []
    event_time = view.event_time or source.event_time
    if event_time is None:
        problems.append(f"{where}: event_time: dataset {view.source!r} declares no event_time; name the column")
    for field, column in (("event_time", event_time), ("created_time", view.created_time)):
        if column is None:
            continue
        data_type = source.columns.get(column)
        if data_type is None:
            problems.append(f"{where}: {field}: {column!r} is not a column of dataset {view.source!r}")
        elif not pa.types.is_timestamp(data_type):
            problems.append(f"{where}: {field}: column {column!r} is {data_type}, not a timestamp")
    return problems


def _feature_problems(feature: Feature, source: SourceSchema, keys: set[str]) -> list[str]:
    if feature.name.startswith(RESERVED_PREFIX):
        return [f"names starting with {RESERVED_PREFIX!r} are reserved"]
    if feature.name in keys:
        return [f"name {feature.name!r} is a join key of the view; name the feature differently"]
    if feature.kind == "expression":
        assert feature.expr is not None
        try:
            expression_type(feature.expr, source.columns)
        except InvalidSpec as exc:
            return [exc.message]
        return []
    column = feature.source_column
    if column is None:
        return []  # count of rows
    data_type = source.columns.get(column)
    if data_type is None:
        return [f"column {column!r} is not in the source (columns: {sorted(source.columns)})"]
    return _aggregation_type_problems(feature, column, data_type)


def _aggregation_type_problems(feature: Feature, column: str, data_type: pa.DataType) -> list[str]:
    numeric = pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type)
    if feature.agg in ("sum", "mean") and not numeric:
        return [f"{feature.agg} needs a numeric column; {column!r} is {data_type}"]
    orderable = numeric or pa.types.is_string(data_type) or pa.types.is_temporal(data_type)
    if feature.agg in ("min", "max") and not orderable:
        return [f"{feature.agg} needs a number, string or time column; {column!r} is {data_type}"]
    return []


def _service_problems(service: FeatureService, views: dict[str, FeatureView]) -> list[str]:
    where = f"feature service {service.name!r}"
    problems = []
    for ref in service.features:
        view_name, feature_name = parse_feature_ref(ref)
        view = views.get(view_name)
        if view is None:
            problems.append(f"{where}: features: {ref!r} names unknown feature view {view_name!r}")
        elif feature_name != "*" and view.feature(feature_name) is None:
            known = [feature.name for feature in view.features]
            problems.append(f"{where}: features: view {view_name!r} has no feature {feature_name!r} (it has {known})")
    return problems
