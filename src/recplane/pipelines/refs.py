"""What steps pass each other: references to platform artefacts (datasets, model versions, runs) and JSON values.

A step's inputs and outputs are JSON. The reference types travel as tagged mappings (``{"$ref": "dataset",
"name": ..., "version": ...}``) so that a cache key sees the exact dataset version a step read, and a step whose
parameter is annotated ``DatasetRef`` gets a ``DatasetRef`` back, whatever produced it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from recplane.errors import InvalidInput

__all__ = ["REF_TYPES", "DatasetRef", "ModelVersionRef", "RunRef", "decode_value", "encode_value", "ref_type_of"]

_TAG = "$ref"


@dataclass(frozen=True)
class DatasetRef:
    """A dataset at a version (``None``: the newest when the consuming step starts; the run pins it)."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> DatasetRef:
        """``"ratings"`` or ``"ratings@3"``."""
        name, _, version = text.partition("@")
        if not name or (version and not version.isdigit()):
            raise InvalidInput(f"{text!r} is not a dataset reference; write NAME or NAME@VERSION (e.g. ratings@3).")
        return cls(name, int(version) if version else None)


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version (``version`` a number; ``alias`` instead names e.g. ``production``)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.version if self.version is not None else self.alias or 'latest'}"


@dataclass(frozen=True)
class RunRef:
    """A recorded training run."""

    id: str

    def __str__(self) -> str:
        return self.id


REF_TYPES: dict[str, type[Any]] = {"dataset": DatasetRef, "model_version": ModelVersionRef, "run": RunRef}
_TAGS = {kind: tag for tag, kind in REF_TYPES.items()}


def encode_value(value: Any) -> Any:
    """A step's value as JSON: references become tagged mappings, tuples lists; other non-JSON values fail."""
    if type(value) in _TAGS:
        return {_TAG: _TAGS[type(value)], **dataclasses.asdict(value)}
    if isinstance(value, dict):
        return {str(key): encode_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode_value(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise InvalidInput(
        f"A step value of type {type(value).__name__} cannot be stored: return JSON values (str, numbers, lists, "
        "mappings) or DatasetRef / ModelVersionRef / RunRef, and keep large data in datasets."
    )


def decode_value(value: Any, annotation: Any = Any) -> Any:
    """JSON back to a step's value: tagged mappings become references; a bare string for a ``DatasetRef``
    parameter is read as ``NAME[@VERSION]``."""
    target = _ref_annotation(annotation)
    if target is DatasetRef and isinstance(value, str):
        return DatasetRef.parse(value)
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if isinstance(tag, str) and tag in REF_TYPES:
            fields = {key: item for key, item in value.items() if key != _TAG}
            try:
                return REF_TYPES[tag](**fields)
            except TypeError as exc:
                raise InvalidInput(f"A {tag} reference has unexpected fields {sorted(fields)}: {exc}") from exc
        if target is not None and set(value) <= {field.name for field in dataclasses.fields(target)}:
            return target(**value)
        return {key: decode_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_value(item) for item in value]
    return value


def _ref_annotation(annotation: Any) -> type[Any] | None:
    """The reference type an annotation asks for (``DatasetRef``, ``DatasetRef | None`` ...), else None."""
    if annotation in _TAGS:
        return typing.cast(type[Any], annotation)
    for argument in typing.get_args(annotation):
        if argument in _TAGS:
            return typing.cast(type[Any], argument)
    return None


def ref_type_of(annotation: Any) -> str | None:
    """``"dataset"``, ``"model_version"``, ``"run"`` for an annotation naming a reference type, else None."""
    found = _ref_annotation(annotation)
    return None if found is None else _TAGS[found]
