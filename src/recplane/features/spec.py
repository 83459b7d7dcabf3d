"""Feature definitions: entities, feature views over datasets and feature services, in Python or YAML.

An **entity** names the keys features are looked up by (``user`` → ``user_id``). A **feature view** reads one
dataset and turns its rows into features of one or more entities: plain columns, DuckDB SQL expressions over
the row, or windowed aggregations on event time. A **feature service** is the named set of features a model
uses. In YAML::

    entities:
      - {name: user, join_keys: [user_id]}
    feature_views:
      - name: user_stats
        entities: [user]
        source: purchases            # a dataset; views over other views are not supported
        ttl: 30d
        features:
          - price                    # a column, as is
          - {name: spend, expr: "price * quantity"}
          - {name: buys_7d, agg: count, window: 7d}
          - {name: spend_30d, agg: sum, column: price, window: 30d}
          - {name: recent_items, agg: last_n, column: item_id, n: 5, window: 30d}
    feature_services:
      - {name: ranker, features: ["user_stats:*"]}

``load_feature_definitions`` reads such a file, a folder of them, Python files defining the objects, or the
objects themselves.
"""

from __future__ import annotations

import re
import runpy
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recplane.errors import InvalidSpec
from recplane.lake.spec import NAME_PATTERN, parse_duration

__all__ = [
    "AGGREGATIONS",
    "DefinitionKind",
    "Entity",
    "Feature",
    "FeatureDefinitions",
    "FeatureService",
    "FeatureView",
    "load_feature_definitions",
    "parse_feature_ref",
]

AGGREGATIONS = ("count", "sum", "mean", "min", "max", "last_n")
Aggregation = Literal["count", "sum", "mean", "min", "max", "last_n"]
DefinitionKind = Literal["entity", "feature_view", "feature_service"]
_COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_FEATURE_REF = re.compile(r"^([a-z][a-z0-9_]{0,127}):(\*|[A-Za-z_][A-Za-z0-9_]{0,127})$")


def _duration(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_duration(value)
        except InvalidSpec as exc:  # a ValueError, so pydantic names the object and field
            raise ValueError(exc.message) from exc
    return value


class Entity(BaseModel):
    """Something features describe (a user, an item, a user-item pair), identified by its join key columns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    join_keys: list[str] = Field(min_length=1)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("join_keys")
    @classmethod
    def _valid_keys(cls, keys: list[str]) -> list[str]:
        bad = [key for key in keys if not re.fullmatch(_COLUMN, key)]
        if bad:
            raise ValueError(f"join key(s) {bad} must be column names (letters, digits, _)")
        if len(set(keys)) != len(keys):
            raise ValueError(f"join keys {keys} repeat a column")
        return keys


class Feature(BaseModel):
    """One feature of a view: a column (``column``), a SQL expression (``expr``) or an aggregation (``agg``).

    Aggregations run over the source rows of the same entity whose event time lies in
    ``(label time - window, label time]``; ``count`` without a column counts rows, ``last_n`` lists the ``n``
    latest values, oldest first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_COLUMN)
    column: str | None = Field(default=None, pattern=_COLUMN)
    expr: str | None = None
    agg: Aggregation | None = None
    window: str | None = None
    n: int | None = Field(default=None, ge=1, le=10_000)
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("window")
    @classmethod
    def _valid_window(cls, value: str | None) -> str | None:
        return _duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.expr is not None and (self.column is not None or self.agg is not None):
            raise ValueError("give either expr (a SQL expression) or column/agg, not both")
        if self.expr is not None and not self.expr.strip():
            raise ValueError("expr is empty")
        if self.agg is None:
            if self.window is not None or self.n is not None:
                raise ValueError("window and n belong to aggregations: add agg (count, sum, mean, min, max, last_n)")
            return self
        if self.window is None:
            raise ValueError(f"aggregation {self.agg!r} needs a window, e.g. window: 7d")
        if self.agg != "count" and self.column is None:
            raise ValueError(f"aggregation {self.agg!r} needs a column to aggregate")
        if (self.agg == "last_n") != (self.n is not None):
            raise ValueError("n (how many values) goes with agg: last_n, and only with it")
        return self

    @property
    def kind(self) -> Literal["column", "expression", "aggregation"]:
        """What computes the feature."""
        if self.agg is not None:
            return "aggregation"
        return "expression" if self.expr is not None else "column"

    @property
    def source_column(self) -> str | None:
        """The source column read (for plain columns, the feature's own name unless ``column`` says otherwise)."""
        if self.kind == "column":
            return self.column or self.name
        return self.column

    @property
    def window_period(self) -> timedelta | None:
        """The aggregation window as a timedelta."""
        return parse_duration(self.window) if self.window else None


class FeatureView(BaseModel):
    """Features of some entities computed from one dataset, valid for ``ttl`` after their event time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    entities: list[str] = Field(min_length=1)
    source: str = Field(pattern=NAME_PATTERN)
    source_version: int | None = Field(default=None, ge=0)
    event_time: str | None = Field(default=None, pattern=_COLUMN)
    created_time: str | None = Field(default=None, pattern=_COLUMN)
    features: list[Feature] = Field(min_length=1)
    ttl: str | None = None
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("ttl")
    @classmethod
    def _valid_ttl(cls, value: str | None) -> str | None:
        return _duration(value)

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureView:
        names = [feature.name for feature in self.features]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"feature name(s) {repeated} appear more than once")
        if len(set(self.entities)) != len(self.entities):
            raise ValueError(f"entities {self.entities} repeat an entity")
        return self

    @property
    def ttl_period(self) -> timedelta | None:
        """TTL as a timedelta, if set."""
        return parse_duration(self.ttl) if self.ttl else None

    def feature(self, name: str) -> Feature | None:
        """The feature called ``name``, if the view has one."""
        return next((feature for feature in self.features if feature.name == name), None)


class FeatureService(BaseModel):
    """A named set of features (``view:feature`` or ``view:*``) that a model reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    features: list[str] = Field(min_length=1)
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("features")
    @classmethod
    def _valid_refs(cls, refs: list[str]) -> list[str]:
        for ref in refs:
            parse_feature_ref(ref)
        return refs


Definition = Entity | FeatureView | FeatureService
_KINDS: dict[str, type[BaseModel]] = {"entity": Entity, "feature_view": FeatureView, "feature_service": FeatureService}
_SECTIONS = {"entities": "entity", "feature_views": "feature_view", "feature_services": "feature_service"}


def kind_of(definition: Definition) -> DefinitionKind:
    """The kind string of a definition object."""
    if isinstance(definition, Entity):
        return "entity"
    return "feature_view" if isinstance(definition, FeatureView) else "feature_service"


def parse_feature_ref(ref: str) -> tuple[str, str]:
    """Split ``view:feature`` (or ``view:*``) into its two names, or raise InvalidSpec saying how to write it."""
    match = _FEATURE_REF.match(ref.strip())
    if not match:
        raise InvalidSpec(f"Feature reference {ref!r} is not 'view:feature' or 'view:*' (e.g. 'user_stats:spend').")
    return match.group(1), match.group(2)


class FeatureDefinitions(BaseModel):
    """A set of definitions, as read from files or built in Python."""

    model_config = ConfigDict(extra="forbid")

    entities: list[Entity] = Field(default_factory=list)
    feature_views: list[FeatureView] = Field(default_factory=list)
    feature_services: list[FeatureService] = Field(default_factory=list)

    def all(self) -> list[Definition]:
        """Every definition: entities, then views, then services."""
        return [*self.entities, *self.feature_views, *self.feature_services]

    def add(self, definition: Definition) -> None:
        """Add one definition to its section."""
        if isinstance(definition, Entity):
            self.entities.append(definition)
        elif isinstance(definition, FeatureView):
            self.feature_views.append(definition)
        else:
            self.feature_services.append(definition)

    def check_unique_names(self) -> None:
        """Raise InvalidSpec when two definitions of one kind share a name."""
        seen: set[tuple[str, str]] = set()
        for definition in self.all():
            key = (kind_of(definition), definition.name)
            if key in seen:
                plural = {"entity": "entities"}.get(key[0], key[0].replace("_", " ") + "s")
                raise InvalidSpec(f"Two {plural} are named {key[1]!r}; names must be unique per kind.")
            seen.add(key)


DefinitionSource = str | Path | FeatureDefinitions | Definition | Sequence[Definition] | dict[str, Any]


def load_feature_definitions(source: DefinitionSource) -> FeatureDefinitions:
    """Definitions from objects, a mapping, YAML text, a YAML or Python file, or a folder of them."""
    if isinstance(source, FeatureDefinitions):
        collected = source.model_copy(deep=True)
    elif isinstance(source, Entity | FeatureView | FeatureService):
        collected = FeatureDefinitions()
        collected.add(source)
    elif isinstance(source, dict):
        collected = _from_documents([source], "the given mapping")
    elif isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        collected = _from_path(Path(source))
    elif isinstance(source, str):
        collected = _from_yaml(source, "the given YAML")
    else:
        collected = FeatureDefinitions()
        for definition in source:
            collected.add(_definition(definition))
    collected.check_unique_names()
    return collected


def _definition(value: object) -> Definition:
    if isinstance(value, Entity | FeatureView | FeatureService):
        return value
    raise InvalidSpec(f"{value!r} is not an Entity, FeatureView or FeatureService.")


def _looks_like_path(text: str) -> bool:
    return len(text) < 4096 and "\n" not in text and (Path(text).exists() or text.endswith((".yaml", ".yml", ".py")))


def _from_path(path: Path) -> FeatureDefinitions:
    if not path.exists():
        raise InvalidSpec(f"Feature definitions path {path} does not exist.")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".py")) if path.is_dir() else [path]
    collected = FeatureDefinitions()
    for file in files:
        found = _from_python(file) if file.suffix == ".py" else _from_yaml(file.read_text(), str(file))
        for definition in found.all():
            collected.add(definition)
    if path.is_dir() and not collected.all():
        raise InvalidSpec(f"No feature definitions (*.yaml, *.yml, *.py) found under {path}.")
    return collected


def _from_python(file: Path) -> FeatureDefinitions:
    """The Entity/FeatureView/FeatureService objects a Python file defines at module level."""
    try:
        namespace = runpy.run_path(str(file))
    except Exception as exc:  # the user's file: any error it raises is theirs to see
        raise InvalidSpec(f"Running {file} failed: {type(exc).__name__}: {exc}") from exc
    collected = FeatureDefinitions()
    for value in namespace.values():
        if isinstance(value, Entity | FeatureView | FeatureService):
            collected.add(value)
        elif isinstance(value, FeatureDefinitions):
            for definition in value.all():
                collected.add(definition)
    return collected


def _from_yaml(text: str, origin: str) -> FeatureDefinitions:
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{origin} is not valid YAML: {exc}") from exc
    return _from_documents(documents, origin)


def _from_documents(documents: Iterable[Any], origin: str) -> FeatureDefinitions:
    """Each document is a mapping of sections (entities, feature_views, feature_services) or one object with kind."""
    collected = FeatureDefinitions()
    for document in documents:
        if not isinstance(document, dict):
            raise InvalidSpec(f"{origin}: each YAML document must be a mapping, not {type(document).__name__}.")
        for kind, body in _objects_of(document, origin):
            collected.add(_validated(kind, body, origin))
    return collected


def _objects_of(document: dict[str, Any], origin: str) -> list[tuple[str, Any]]:
    if "kind" in document:
        body = dict(document)
        kind = str(body.pop("kind"))
        if kind not in _KINDS:
            raise InvalidSpec(f"{origin}: kind {kind!r} is not one of {sorted(_KINDS)}.")
        return [(kind, body)]
    unknown = sorted(set(document) - set(_SECTIONS))
    if unknown:
        raise InvalidSpec(
            f"{origin}: unknown section(s) {unknown}; use entities, feature_views and feature_services "
            f"(or one object per document with a 'kind')."
        )
    pairs = []
    for section, kind in _SECTIONS.items():
        items = document.get(section) or []
        if not isinstance(items, list):
            raise InvalidSpec(f"{origin}: {section} must be a list.")
        pairs += [(kind, item) for item in items]
    return pairs


def _validated(kind: str, body: Any, origin: str) -> Definition:
    model = _KINDS[kind]
    name = body.get("name", "?") if isinstance(body, dict) else "?"
    try:
        return model.model_validate(body)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or kind}: {err['msg']}" for err in exc.errors())
        raise InvalidSpec(
            f"Invalid {kind.replace('_', ' ')} {name!r} in {origin}: {problems}", details={"errors": problems}
        ) from exc


def definition_from_dict(kind: str, body: dict[str, Any]) -> Definition:
    """Rebuild a stored definition (its JSON form) as an object."""
    return _validated(kind, body, "the catalog")
