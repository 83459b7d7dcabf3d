"""What the model registry hands out: registered models, their versions with lineage, alias moves, comparisons.

These are the SDK's, the REST API's and the CLI's shared schema. Names and references are checked here too:
a model is named like ``mf-ml100k`` and referred to as ``NAME`` (latest), ``NAME:3`` (a version) or
``NAME@production`` (an alias).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recplane.errors import InvalidInput

__all__ = [
    "LATEST",
    "AliasEvent",
    "AliasPointer",
    "JsonScalar",
    "MetricComparison",
    "ModelLineage",
    "ModelVersion",
    "ParamChange",
    "RegisteredModel",
    "VersionComparison",
    "check_alias",
    "check_model_name",
    "parse_model_ref",
]

LATEST = "latest"
MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,127}$"
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
JsonScalar = str | int | float | bool | None


class ModelLineage(BaseModel):
    """Where a model version came from: its training run, the data versions it read and the code that trained it.

    Registering from a run fills every field the run knows; registering bare files keeps only what is given.
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str | None = None
    run_name: str | None = None
    dataset: str | None = Field(default=None, description="The interactions (or training-set) dataset.")
    dataset_version: int | None = None
    item_features: str | None = None
    item_features_version: int | None = None
    user_features: str | None = None
    user_features_version: int | None = None
    feature_service: str | None = Field(default=None, description="The feature service of the training set.")
    feature_views: dict[str, int] = Field(default_factory=dict, description="Feature view name -> version used.")
    training_set: dict[str, Any] | None = Field(
        default=None, description="The training set's own lineage when the dataset version was written as one."
    )
    git_sha: str | None = None
    git_dirty: bool | None = None
    recplane_version: str | None = None
    source_uri: str | None = Field(default=None, description="Where the registered files were copied from.")


class ModelVersion(BaseModel):
    """One immutable, numbered version of a registered model (versions count from 1)."""

    name: str
    version: int
    team: str
    artifact_uri: str = Field(description="The registry's copy of the exported model folder (fsspec URL or path).")
    kind: str = Field(description="'retrieval' or 'ranking' (from the export manifest).")
    model_class: str
    signature: dict[str, Any] = Field(
        default_factory=dict, description="Exported inputs/outputs, the inference form and the model's signature."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Training config of the run (hyperparameters).")
    metrics: dict[str, JsonScalar] = Field(default_factory=dict, description="Final metrics: test.*, best_valid ...")
    lineage: ModelLineage = Field(default_factory=ModelLineage)
    run_id: str | None = None
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    created_by: str = ""
    created_at: datetime

    @property
    def ref(self) -> str:
        """``NAME:VERSION``, e.g. for logs and serving responses."""
        return f"{self.name}:{self.version}"


class RegisteredModel(BaseModel):
    """A registered model: its owner, newest version and where each alias points now."""

    name: str
    team: str
    description: str = ""
    created_by: str = ""
    created_at: datetime
    updated_at: datetime
    latest_version: int | None = None
    version_count: int = 0
    aliases: dict[str, int] = Field(default_factory=dict, description="Alias -> the version it points to now.")


class AliasEvent(BaseModel):
    """One alias move: who pointed which alias from which version to which, when and why.

    ``from_version`` is None when the alias was created, ``to_version`` None when it was deleted.
    """

    id: int
    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str = ""
    at: datetime


class AliasPointer(BaseModel):
    """Where an alias points: now, or at a past moment (``at``) according to its history."""

    name: str
    alias: str
    version: int | None = Field(description="None: the alias did not exist (then).")
    at: datetime | None = Field(default=None, description="The moment asked about; None means now.")


class MetricComparison(BaseModel):
    """One metric of two versions side by side."""

    name: str
    values: tuple[JsonScalar, JsonScalar] = Field(description="The value of each version (None: not recorded).")
    delta: float | None = Field(default=None, description="Second minus first, when both are numbers.")
    higher_is_better: bool | None = Field(default=None, description="None for facts that are not scored.")
    better: int | None = Field(default=None, description="The version with the better value (None: tie or n/a).")


class ParamChange(BaseModel):
    """A training setting (dotted name) that differs between two versions."""

    name: str
    values: tuple[JsonScalar, JsonScalar]


class VersionComparison(BaseModel):
    """Two versions of a model: every metric side by side with deltas, and the settings that differ."""

    name: str
    versions: tuple[int, int]
    metrics: list[MetricComparison]
    params: list[ParamChange]


def check_model_name(name: str) -> str:
    """``name`` if it is a valid model name, else InvalidInput."""
    if not isinstance(name, str) or not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise InvalidInput(
            f"Model name {name!r} is not valid: use lowercase letters, digits, '-' and '_', starting with a letter "
            "(at most 128 characters), e.g. 'mf-ml100k'."
        )
    return name


def check_alias(alias: str) -> str:
    """``alias`` if it is a valid alias name (not a number, not 'latest'), else InvalidInput."""
    if alias == LATEST or not isinstance(alias, str) or not re.fullmatch(ALIAS_PATTERN, alias):
        raise InvalidInput(
            f"Alias {alias!r} is not valid: use lowercase letters, digits, '-' and '_', starting with a letter "
            f"(at most 64 characters), and not {LATEST!r}, e.g. 'production' or 'candidate'."
        )
    return alias


def parse_model_ref(text: str) -> tuple[str, str | int]:
    """``NAME`` -> (NAME, 'latest'); ``NAME:3`` -> (NAME, 3); ``NAME@production`` -> (NAME, 'production')."""
    if "@" in text:
        name, _, alias = text.partition("@")
        return check_model_name(name), check_alias(alias) if alias != LATEST else LATEST
    if ":" in text:
        name, _, version = text.partition(":")
        if not version.isdigit():
            raise InvalidInput(f"{text!r}: the part after ':' must be a version number, as in 'mf:3'.")
        return check_model_name(name), int(version)
    return check_model_name(text), LATEST
