"""The feature registry: definitions stored in the catalog, versioned, changed by plan-then-apply.

``plan`` compares the given definitions with the registered ones and says, per object, whether it would be
created, updated (with the fields that change), left unchanged or — when asked to prune — deleted, like
``terraform plan``. ``apply`` validates the whole resulting set (the given definitions on top of those
already registered) and writes a new version for each changed object only. Old versions stay, so a training
set can always name the exact definitions it used.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from recplane.auth import Principal
from recplane.catalog import Catalog
from recplane.catalog.tables import FeatureDefinitionRecord
from recplane.errors import AlreadyExists, InvalidInput, NotFound
from recplane.features.spec import (
    Definition,
    DefinitionKind,
    FeatureDefinitions,
    FeatureView,
    definition_from_dict,
    kind_of,
)
from recplane.features.validation import SourceSchema, validate_definitions
from recplane.lake import DatasetService

__all__ = [
    "FeatureDefinitionInfo",
    "FeaturePlan",
    "FeatureRegistry",
    "FieldChange",
    "PlannedChange",
    "diff_specs",
    "plan_changes",
]

Action = Literal["create", "update", "unchanged", "delete"]
_KIND_ORDER = {"entity": 0, "feature_view": 1, "feature_service": 2}
_SYMBOLS = {"create": "+", "update": "~", "unchanged": " ", "delete": "-"}


class FieldChange(BaseModel):
    """One field that differs between the registered and the new definition (``path`` like ``features.spend.expr``)."""

    path: str
    old: Any = None
    new: Any = None


class PlannedChange(BaseModel):
    """What happens to one definition: its action, the version it has now and the one it gets."""

    kind: DefinitionKind
    name: str
    action: Action
    current_version: int | None = None
    new_version: int | None = None
    changes: list[FieldChange] = []


class FeaturePlan(BaseModel):
    """Every planned change; ``applied`` says whether it was written to the catalog."""

    changes: list[PlannedChange]
    applied: bool = False

    @property
    def has_changes(self) -> bool:
        """Whether applying would write anything."""
        return any(change.action != "unchanged" for change in self.changes)

    def count(self, action: Action) -> int:
        """How many definitions get ``action``."""
        return sum(change.action == action for change in self.changes)

    def render(self) -> str:
        """A terraform-like text: one line per object, field changes indented under updates, then a summary."""
        lines = []
        for change in self.changes:
            version = _version_text(change)
            lines.append(f"{_SYMBOLS[change.action]} {change.kind} {change.name}{version}")
            lines += [f"    ~ {c.path}: {_short(c.old)} -> {_short(c.new)}" for c in change.changes]
        verb = "Applied" if self.applied else "Plan"
        summary = ", ".join(f"{self.count(a)} to {a}" for a in ("create", "update", "delete"))
        lines.append(f"{verb}: {summary}, {self.count('unchanged')} unchanged.")
        return "\n".join(lines)


def _version_text(change: PlannedChange) -> str:
    if change.action == "create":
        return f" (v{change.new_version})"
    if change.action == "update":
        return f" (v{change.current_version} -> v{change.new_version})"
    return f" (v{change.current_version})"


def _short(value: Any) -> str:
    text = "(none)" if value is None else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class FeatureDefinitionInfo(BaseModel):
    """One stored version of a definition."""

    kind: DefinitionKind
    name: str
    version: int
    spec: dict[str, Any]
    deleted: bool = False
    author: str = ""
    created_at: datetime

    def definition(self) -> Definition:
        """The stored spec as an Entity, FeatureView or FeatureService object."""
        return definition_from_dict(self.kind, self.spec)


def diff_specs(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Field-level differences; lists of named objects (features) are matched by name, not position."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in dict.fromkeys([*old, *new]):
            changes += diff_specs(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return changes
    if _named_list(old) and _named_list(new) and old != new:
        return diff_specs({item["name"]: item for item in old}, {item["name"]: item for item in new}, path) or [
            FieldChange(path=f"{path} (order)", old=[i["name"] for i in old], new=[i["name"] for i in new])
        ]
    return [] if old == new else [FieldChange(path=path, old=old, new=new)]


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) and "name" in item for item in value)


def _spec_dict(definition: Definition) -> dict[str, Any]:
    return definition.model_dump(mode="json", exclude_defaults=False)


def plan_changes(
    current: dict[tuple[str, str], FeatureDefinitionInfo], desired: FeatureDefinitions, *, prune: bool = False
) -> FeaturePlan:
    """The plan that turns the registered definitions ``current`` into ``desired`` (pure)."""
    changes = []
    wanted = set()
    for definition in desired.all():
        key = (kind_of(definition), definition.name)
        wanted.add(key)
        changes.append(_planned(key, current.get(key), _spec_dict(definition)))
    if prune:
        changes += [
            PlannedChange(
                kind=info.kind,
                name=info.name,
                action="delete",
                current_version=info.version,
                new_version=info.version + 1,
            )
            for key, info in current.items()
            if key not in wanted
        ]
    changes.sort(key=lambda change: (_KIND_ORDER[change.kind], change.name))
    return FeaturePlan(changes=changes)


def _planned(key: tuple[str, str], info: FeatureDefinitionInfo | None, spec: dict[str, Any]) -> PlannedChange:
    kind, name = key
    if info is None:
        return PlannedChange(kind=kind, name=name, action="create", new_version=1)
    differences = diff_specs(info.spec, spec)
    if not differences:
        return PlannedChange(kind=kind, name=name, action="unchanged", current_version=info.version)
    return PlannedChange(
        kind=kind,
        name=name,
        action="update",
        current_version=info.version,
        new_version=info.version + 1,
        changes=differences,
    )


class FeatureRegistry:
    """Registered feature definitions in the catalog, checked against the datasets they read."""

    def __init__(self, catalog: Catalog, datasets: DatasetService) -> None:
        self._catalog = catalog
        self._datasets = datasets

    def plan(self, definitions: FeatureDefinitions, *, principal: Principal, prune: bool = False) -> FeaturePlan:
        """Validate ``definitions`` with what stays registered and say what ``apply`` would change."""
        current = self._latest()
        plan = plan_changes(current, definitions, prune=prune)
        validate_definitions(_resulting(current, definitions, plan), self._schema_lookup(principal))
        return plan

    def apply(
        self,
        definitions: FeatureDefinitions,
        *,
        principal: Principal,
        author: str | None = None,
        prune: bool = False,
    ) -> FeaturePlan:
        """Validate, then register a new version of every created, changed or (with ``prune``) deleted object."""
        plan = self.plan(definitions, principal=principal, prune=prune)
        specs = {(kind_of(d), d.name): _spec_dict(d) for d in definitions.all()}
        who = author or principal.name
        try:
            with self._catalog.session() as session:
                for change in plan.changes:
                    if change.action == "unchanged":
                        continue
                    deleted = change.action == "delete"
                    spec = self._stored_spec(change) if deleted else specs[(change.kind, change.name)]
                    session.add(
                        FeatureDefinitionRecord(
                            kind=change.kind,
                            name=change.name,
                            version=change.new_version,
                            spec=spec,
                            deleted=deleted,
                            author=who,
                        )
                    )
        except IntegrityError as exc:
            raise AlreadyExists(
                "Another apply registered some of these definitions at the same time; run the plan again."
            ) from exc
        return plan.model_copy(update={"applied": True})

    def list(self, *, kind: DefinitionKind | None = None) -> builtins.list[FeatureDefinitionInfo]:
        """The latest version of every registered (not deleted) definition, by kind then name."""
        infos = [info for info in self._latest().values() if kind is None or info.kind == kind]
        return sorted(infos, key=lambda info: (_KIND_ORDER[info.kind], info.name))

    def get(self, kind: DefinitionKind, name: str, *, version: int | None = None) -> FeatureDefinitionInfo:
        """One definition at a version (default: the latest); NotFound names what exists."""
        query = select(FeatureDefinitionRecord).where(
            FeatureDefinitionRecord.kind == kind, FeatureDefinitionRecord.name == name
        )
        if version is not None:
            query = query.where(FeatureDefinitionRecord.version == version)
        with self._catalog.session() as session:
            record = session.scalars(query.order_by(FeatureDefinitionRecord.version.desc()).limit(1)).one_or_none()
        if record is None or (version is None and record.deleted):
            label = kind.replace("_", " ")
            at = f" version {version}" if version is not None else ""
            raise NotFound(f"No {label} named {name!r}{at}. List them with `recplane features list`.")
        return _info(record)

    def history(self, kind: DefinitionKind, name: str) -> builtins.list[FeatureDefinitionInfo]:
        """Every version of one definition, newest first."""
        query = (
            select(FeatureDefinitionRecord)
            .where(FeatureDefinitionRecord.kind == kind, FeatureDefinitionRecord.name == name)
            .order_by(FeatureDefinitionRecord.version.desc())
        )
        with self._catalog.session() as session:
            return [_info(record) for record in session.scalars(query)]

    def definitions(self) -> FeatureDefinitions:
        """Every registered definition at its latest version, as objects."""
        collected = FeatureDefinitions()
        for info in self.list():
            collected.add(info.definition())
        return collected

    def view(self, name: str, *, version: int | None = None) -> tuple[FeatureView, int]:
        """A feature view at a version (default: the latest) and that version's number."""
        info = self.get("feature_view", name, version=version)
        definition = info.definition()
        assert isinstance(definition, FeatureView)
        return definition, info.version

    def _stored_spec(self, change: PlannedChange) -> dict[str, Any]:
        return self.get(change.kind, change.name).spec

    def _latest(self) -> dict[tuple[str, str], FeatureDefinitionInfo]:
        newest = (
            select(
                FeatureDefinitionRecord.kind,
                FeatureDefinitionRecord.name,
                func.max(FeatureDefinitionRecord.version).label("version"),
            )
            .group_by(FeatureDefinitionRecord.kind, FeatureDefinitionRecord.name)
            .subquery()
        )
        query = select(FeatureDefinitionRecord).join(
            newest,
            (FeatureDefinitionRecord.kind == newest.c.kind)
            & (FeatureDefinitionRecord.name == newest.c.name)
            & (FeatureDefinitionRecord.version == newest.c.version),
        )
        with self._catalog.session() as session:
            records = [record for record in session.scalars(query) if not record.deleted]
        return {(record.kind, record.name): _info(record) for record in records}

    def _schema_lookup(self, principal: Principal) -> Any:
        def schema_of(name: str) -> SourceSchema | None:
            try:
                spec = self._datasets.open(name, principal=principal).spec
            except NotFound:
                return None
            return SourceSchema({column: c.arrow for column, c in spec.columns.items()}, spec.event_time)

        return schema_of


def _resulting(
    current: dict[tuple[str, str], FeatureDefinitionInfo], desired: FeatureDefinitions, plan: FeaturePlan
) -> FeatureDefinitions:
    """The definitions registered after ``plan``: desired ones, plus current ones neither replaced nor deleted."""
    resulting = desired.model_copy(deep=True)
    given = {(kind_of(d), d.name) for d in desired.all()}
    deleted = {(c.kind, c.name) for c in plan.changes if c.action == "delete"}
    for key, info in current.items():
        if key not in given and key not in deleted:
            resulting.add(info.definition())
    return resulting


def _info(record: FeatureDefinitionRecord) -> FeatureDefinitionInfo:
    created = record.created_at if record.created_at.tzinfo else record.created_at.replace(tzinfo=UTC)
    return FeatureDefinitionInfo(
        kind=record.kind,
        name=record.name,
        version=record.version,
        spec=record.spec,
        deleted=record.deleted,
        author=record.author,
        created_at=created,
    )


def require_definitions(definitions: FeatureDefinitions) -> FeatureDefinitions:
    """``definitions`` unless empty (applying nothing is almost always a wrong path)."""
    if not definitions.all():
        raise InvalidInput("No feature definitions given; point at a YAML/Python file or folder that defines some.")
    return definitions
