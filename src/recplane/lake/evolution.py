"""Schema evolution planning: which spec changes are safe, and what each one costs.

A pure function over two specs, with no I/O. Accepted changes:

- **metadata only** (no new Delta commit): descriptions, quality rules, retention, dedup key, column order;
- **additive** (cheap, one metadata commit): new nullable columns — old rows read them as null;
- **widening** (a rewrite of the table as a new version): int8 → int16 → int32 → int64, float32 → float64,
  and non-nullable → nullable.

Everything else would break readers or silently change the meaning of stored data, so it is refused with
:class:`~recplane.errors.SchemaChangeRefused` and a message that names the safe path: dropped or renamed
columns, narrowing, incompatible types, new non-nullable columns, nullable → non-nullable, and changes to
``team``, ``event_time`` or ``partition_by``.
"""

from __future__ import annotations

from dataclasses import dataclass

from recplane.errors import SchemaChangeRefused
from recplane.lake.spec import ColumnSpec, DatasetSpec

__all__ = ["SchemaPlan", "TypeWidening", "can_widen", "plan_schema_change"]

_INTEGERS = ("int8", "int16", "int32", "int64")
_FLOATS = ("float32", "float64")
_METADATA_FIELDS = ("description", "quality", "retention", "dedup_key")
_FIXED_FIELDS = ("team", "event_time", "partition_by")


@dataclass(frozen=True)
class TypeWidening:
    """A column whose type grows to a wider one."""

    column: str
    old: str
    new: str


@dataclass(frozen=True)
class SchemaPlan:
    """The accepted difference between a dataset's current spec and a new one."""

    added: tuple[str, ...] = ()
    widened: tuple[TypeWidening, ...] = ()
    relaxed: tuple[str, ...] = ()
    metadata_changes: tuple[str, ...] = ()

    @property
    def changes_schema(self) -> bool:
        """True when the stored schema changes (a new schema version)."""
        return bool(self.added or self.widened or self.relaxed)

    @property
    def needs_rewrite(self) -> bool:
        """True when the data must be rewritten (Delta cannot widen a type or relax nullability in place)."""
        return bool(self.widened or self.relaxed)

    @property
    def is_noop(self) -> bool:
        """True when the new spec equals the old one in everything that matters."""
        return not (self.changes_schema or self.metadata_changes)

    def describe(self) -> str:
        """A one-line summary, e.g. ``added genres; widened age int32→int64``."""
        parts = []
        if self.added:
            parts.append("added " + ", ".join(self.added))
        if self.widened:
            parts.append("widened " + ", ".join(f"{w.column} {w.old}→{w.new}" for w in self.widened))
        if self.relaxed:
            parts.append("made nullable " + ", ".join(self.relaxed))
        if self.metadata_changes:
            parts.append("changed " + ", ".join(self.metadata_changes))
        return "; ".join(parts) or "no change"


def can_widen(old: str, new: str) -> bool:
    """Whether values of type ``old`` fit losslessly in type ``new`` (a strictly wider type)."""
    for family in (_INTEGERS, _FLOATS):
        if old in family and new in family:
            return family.index(new) > family.index(old)
    return False


def plan_schema_change(old: DatasetSpec, new: DatasetSpec) -> SchemaPlan:
    """The plan that turns ``old`` into ``new``; raises SchemaChangeRefused listing every breaking change."""
    problems = _fixed_field_problems(old, new) + _dropped_column_problems(old, new)
    added = tuple(name for name in new.columns if name not in old.columns)
    problems += [_non_nullable_added(name) for name in added if not new.columns[name].nullable]
    widened: list[TypeWidening] = []
    relaxed: list[str] = []
    for name, before in old.columns.items():
        after = new.columns.get(name)
        if after is None:
            continue
        problems += _column_problems(name, before, after)
        if before.type != after.type and can_widen(before.type, after.type):
            widened.append(TypeWidening(name, before.type, after.type))
        if not before.nullable and after.nullable:
            relaxed.append(name)
    if problems:
        raise SchemaChangeRefused(
            f"Dataset {old.name!r} cannot take this spec: " + " ".join(problems),
            details={"dataset": old.name, "problems": problems},
        )
    return SchemaPlan(added, tuple(widened), tuple(relaxed), _metadata_changes(old, new))


def _fixed_field_problems(old: DatasetSpec, new: DatasetSpec) -> list[str]:
    problems = []
    for field in _FIXED_FIELDS:
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            problems.append(
                f"'{field}' cannot change from {before!r} to {after!r}: it decides how existing data is "
                f"stored and owned. Create a new dataset with the new {field} and copy the data into it."
            )
    return problems


def _dropped_column_problems(old: DatasetSpec, new: DatasetSpec) -> list[str]:
    dropped = [name for name in old.columns if name not in new.columns]
    added = [name for name in new.columns if name not in old.columns]
    problems = []
    for name in dropped:
        same_type = [a for a in added if new.columns[a].type == old.columns[name].type]
        hint = f"; it looks renamed to {same_type[0]!r}" if same_type else ""
        problems.append(
            f"Column {name!r} is missing from the new spec "
            f"(dropping or renaming a column is breaking{hint}). "
            f"Keep {name!r} in the spec; add the new column as nullable and backfill it instead."
        )
    return problems


def _non_nullable_added(name: str) -> str:
    return (
        f"New column {name!r} is declared non-nullable, but existing rows have no value for it. "
        f"Add it as nullable (nullable: true) and backfill it instead."
    )


def _column_problems(name: str, before: ColumnSpec, after: ColumnSpec) -> list[str]:
    problems = []
    if before.type != after.type and not can_widen(before.type, after.type):
        kind = "narrowing" if can_widen(after.type, before.type) else "breaking"
        problems.append(
            f"Column {name!r} cannot change from {before.type} to {after.type} ({kind}). "
            f"Add a new column and backfill it instead."
        )
    if before.nullable and not after.nullable:
        problems.append(
            f"Column {name!r} cannot change from nullable to non-nullable: stored rows may hold nulls. "
            f"Keep it nullable and add a not_null quality rule to reject new nulls instead."
        )
    return problems


def _metadata_changes(old: DatasetSpec, new: DatasetSpec) -> tuple[str, ...]:
    changes = [field for field in _METADATA_FIELDS if getattr(old, field) != getattr(new, field)]
    shared = [name for name in old.columns if name in new.columns]
    changes += [
        f"{name}.description"
        for name in shared
        if old.columns[name].description != new.columns[name].description
    ]
    if list(old.columns) != [name for name in new.columns if name in old.columns]:
        changes.append("column order")
    return tuple(changes)
