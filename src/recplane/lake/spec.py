"""Dataset definitions: a declared schema with types, event time, keys, retention and quality rules.

A spec is written in YAML or Python and is the single source of truth for a dataset's shape. Column types
are short strings so YAML stays readable::

    name: ratings
    team: recsys
    event_time: ts
    columns:
      user_id: {type: int64, nullable: false}
      item_id: int64
      rating: float32
      ts: timestamp
      genres: list<string>
      props: map<string, string>
      title_embedding: vector<float32, 384>
      thumbnail: binary
    dedup_key: [user_id, item_id, ts]
    retention: 90d
    quality:
      - {rule: not_null, columns: [user_id, item_id]}
      - {rule: range, column: rating, min: 1, max: 5}
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recplane.errors import InvalidSpec
from recplane.specs import problems_of, read_yaml_mapping

__all__ = [
    "ColumnSpec",
    "DatasetSpec",
    "arrow_type",
    "load_spec",
    "parse_duration",
    "type_string",
]

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,127}$"
_PRIMITIVES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_ALIASES = {"int": "int64", "long": "int64", "float": "float32", "double": "float64", "str": "string",
            "boolean": "bool", "bytes": "binary"}
TYPE_HELP = (
    "Valid types: bool, int8, int16, int32, int64, float32, float64, string, binary, date, timestamp, "
    "list<T>, map<K, V>, vector<float32, N>."
)


def _split_args(inner: str) -> list[str]:
    """Split 'a, map<b, c>' at top-level commas."""
    parts, depth, current = [], 0, ""
    for char in inner:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += {"<": 1, ">": -1}.get(char, 0)
        current += char
    parts.append(current.strip())
    return parts


def arrow_type(text: str) -> pa.DataType:
    """Parse a recplane type string (e.g. ``list<string>``, ``vector<float32, 384>``) into an Arrow type."""
    raw = text.strip().lower().replace(" ", "")
    name = _ALIASES.get(raw, raw)
    if name in _PRIMITIVES:
        return _PRIMITIVES[name]
    match = re.fullmatch(r"(list|map|vector)<(.+)>", name)
    if not match:
        raise InvalidSpec(f"Unknown column type {text!r}. {TYPE_HELP}")
    kind, args = match.group(1), _split_args(match.group(2))
    if kind == "list" and len(args) == 1:
        return pa.list_(arrow_type(args[0]))
    if kind == "map" and len(args) == 2:
        key = arrow_type(args[0])
        if not (pa.types.is_string(key) or pa.types.is_integer(key)):
            raise InvalidSpec(f"Map keys must be string or integer, not {args[0]!r} in {text!r}.")
        return pa.map_(key, arrow_type(args[1]))
    if kind == "vector" and len(args) in (1, 2):
        element, dim = ("float32", args[0]) if len(args) == 1 else (args[0], args[1])
        value_type = arrow_type(element)
        if not pa.types.is_floating(value_type) or not dim.isdigit() or int(dim) < 1:
            raise InvalidSpec(f"Vectors are vector<float32|float64, N> with N ≥ 1, not {text!r}.")
        return pa.list_(value_type, int(dim))
    raise InvalidSpec(f"Wrong number of type arguments in {text!r}. {TYPE_HELP}")


def type_string(data_type: pa.DataType) -> str:
    """The recplane type string of an Arrow type (inverse of :func:`arrow_type`)."""
    for name, candidate in _PRIMITIVES.items():
        if data_type == candidate:
            return name
    if pa.types.is_timestamp(data_type):
        return "timestamp"
    if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return "string"
    if pa.types.is_large_binary(data_type):
        return "binary"
    if pa.types.is_fixed_size_list(data_type):
        return f"vector<{type_string(data_type.value_type)}, {data_type.list_size}>"
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return f"list<{type_string(data_type.value_type)}>"
    if pa.types.is_map(data_type):
        return f"map<{type_string(data_type.key_type)}, {type_string(data_type.item_type)}>"
    raise InvalidSpec(f"Arrow type {data_type} has no recplane equivalent. {TYPE_HELP}")


_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse ``90d``, ``12h``, ``30m``, ``45s`` or ``2w`` into a timedelta."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise InvalidSpec(
            f"Duration {text!r} is not valid; write a number and a unit: 90d, 12h, 30m, 45s, 2w."
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class ColumnSpec(BaseModel):
    """One column: a type string, nullability and a description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    nullable: bool = True
    description: str = ""

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        return type_string(arrow_type(value))

    @property
    def arrow(self) -> pa.DataType:
        """The column's logical Arrow type."""
        return arrow_type(self.type)


class DatasetSpec(BaseModel):
    """The declared shape and policies of a dataset."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    team: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    description: str = ""
    columns: dict[str, ColumnSpec]
    event_time: str | None = None
    partition_by: list[str] = Field(default_factory=list)
    dedup_key: list[str] = Field(default_factory=list)
    retention: str | None = None
    quality: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("columns", mode="before")
    @classmethod
    def _short_column_form(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("columns must be a non-empty mapping of column name to type")
        return {name: {"type": spec} if isinstance(spec, str) else spec for name, spec in value.items()}

    @field_validator("retention")
    @classmethod
    def _valid_retention(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _references_exist(self) -> DatasetSpec:
        for column in self.columns:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", column):
                raise ValueError(f"column name {column!r} must be letters, digits and _ (not first a digit)")
        referenced = [("event_time", [self.event_time] if self.event_time else [])]
        referenced += [("partition_by", self.partition_by), ("dedup_key", self.dedup_key)]
        for field, names in referenced:
            missing = [name for name in names if name not in self.columns]
            if missing:
                raise ValueError(
                    f"{field} names unknown column(s) {missing}; columns are {list(self.columns)}"
                )
        if self.event_time and not pa.types.is_timestamp(self.columns[self.event_time].arrow):
            raise ValueError(f"event_time column {self.event_time!r} must have type timestamp")
        if self.retention and not self.event_time:
            raise ValueError("retention needs an event_time column to measure the age of rows")
        return self

    def arrow_schema(self) -> pa.Schema:
        """The logical schema users read and write (vectors as fixed-size lists)."""
        return pa.schema([pa.field(n, c.arrow, nullable=c.nullable) for n, c in self.columns.items()])

    def storage_schema(self) -> pa.Schema:
        """The schema stored in Delta (which has no fixed-size lists: vectors become lists)."""
        return pa.schema([_storage_field(field) for field in self.arrow_schema()])

    @property
    def retention_period(self) -> timedelta | None:
        """Retention as a timedelta, if set."""
        return parse_duration(self.retention) if self.retention else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready dict, the form stored in the catalog."""
        return self.model_dump(mode="json")


def _storage_field(field: pa.Field) -> pa.Field:
    if pa.types.is_fixed_size_list(field.type):
        return pa.field(field.name, pa.list_(field.type.value_type), nullable=field.nullable)
    return field


def load_spec(source: str | Path | dict[str, Any] | DatasetSpec) -> DatasetSpec:
    """A DatasetSpec from a spec object, a dict, a YAML string or a YAML file path."""
    if isinstance(source, DatasetSpec):
        return source
    if isinstance(source, dict):
        return _validated(source, "the given mapping")
    data, origin = read_yaml_mapping(source, what="Spec", needs="'name' and 'columns'")
    return _validated(data, origin)


def _validated(data: dict[str, Any], origin: str) -> DatasetSpec:
    from pydantic import ValidationError

    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc)
        raise InvalidSpec(
            f"Invalid dataset spec in {origin}: {problems}", details={"errors": problems}
        ) from exc
