"""Training specs: what to train on which data, as YAML or Python, plus an optional search space for tuning.

A spec names the data by dataset (and optionally version, else the latest at run time; the run records the
version it read) and carries the trainer's settings under ``train`` — any :class:`TrainConfig` field::

    name: mf-ml100k
    dataset: ml100k_ratings          # user_id, item_id, ts (+ rating for CTR models)
    item_features: ml100k_items      # optional: item_id + feature columns (a text embedding, genres ...)
    item_feature_columns: [genres]   # optional: which of them (default: all)
    workers: 1                       # > 1: data-parallel processes (torch.distributed)
    export: true                     # weights + signature + the fastest inference form, in the run's model/
    train:
      model: mf
      epochs: 30
      lr: 0.001
      params: {embedding_size: 64}
    search:                          # only for `recplane tune`
      lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      params.embedding_size: {type: categorical, choices: [32, 64, 128]}

A ranking model can instead train on a point-in-time **training set** built by the feature store: the labels
dataset joined with a feature service's features as of each label's time (``dataset`` then defaults to the
labels; the feature columns become the model's per-row features, ``train.row_feature_columns``)::

    training_set:
      labels: ml100k_ratings          # a dataset with the entity keys and a label time
      labels_version: 3               # optional: default the newest (the run records it as its dataset version)
      features: demo_ranker           # a feature service, or ["view:feature", "view:*", ...]
      label_time_col: ts
      feature_lag: 1s                 # optional: features as of label time - 1s (views over the labels' own
                                      # events then cannot see the label itself)
      exclude_created_after_label: false

Dotted keys (``params.embedding_size``) address nested ``train`` settings, in search spaces and in overrides
(``recplane train spec.yaml --set epochs=5``).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recplane.errors import InvalidInput, InvalidSpec
from recplane.lake.spec import parse_duration
from recplane.specs import read_yaml_mapping
from recplane.training.trainer import MODEL_KINDS, TrainConfig

__all__ = ["SearchParam", "TrainSpec", "TrainingSetSpec", "load_train_spec"]


class SearchParam(BaseModel):
    """One dimension of a search space: a float or int range (``log`` for scales), or a list of choices."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"a {self.type} parameter needs 'low' < 'high'")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale range needs 'low' > 0")
        return self


class TrainingSetSpec(BaseModel):
    """A point-in-time training set to train on: labels joined with registered features as of each label's time.

    The labels are the spec's ``dataset`` at ``version``; ``labels``/``labels_version`` written in this section
    are moved there when the spec is read, so that overrides and resumes have one place to pin them.
    """

    model_config = ConfigDict(extra="forbid")

    features: str | list[str] = Field(description="A feature service name, or ['view:feature', 'view:*', ...].")
    label_time_col: str = "ts"
    exclude_created_after_label: bool = False
    feature_lag: str | None = Field(
        default=None, description="Look features up this long before each label's time, e.g. '1s'."
    )

    @model_validator(mode="after")
    def _valid(self) -> TrainingSetSpec:
        if isinstance(self.features, list) and not self.features:
            raise ValueError("features must name a feature service or at least one 'view:feature'")
        if self.feature_lag is not None:
            try:
                parse_duration(self.feature_lag)
            except InvalidSpec as exc:  # a ValueError for pydantic, so the field is named
                raise ValueError(exc.message) from exc
        return self

    @property
    def lag_seconds(self) -> float:
        """``feature_lag`` in seconds (0 without one)."""
        return parse_duration(self.feature_lag).total_seconds() if self.feature_lag else 0.0


class TrainSpec(BaseModel):
    """A training job: data, trainer settings, parallelism and (for tuning) a search space."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    dataset: str
    training_set: TrainingSetSpec | None = None
    version: int | None = Field(default=None, ge=0)
    item_features: str | None = None
    item_features_version: int | None = Field(default=None, ge=0)
    item_feature_columns: list[str] | None = Field(default=None, description="Feature columns (default: all).")
    user_features: str | None = None
    user_features_version: int | None = Field(default=None, ge=0)
    user_feature_columns: list[str] | None = Field(default=None, description="Feature columns (default: all).")
    workers: int = Field(default=1, ge=1, le=64)
    export: bool = Field(default=True, description="Export the model for serving into the run's model/ folder.")
    tags: dict[str, str] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, SearchParam] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _labels_are_the_dataset(cls, data: Any) -> Any:
        """With a training set, ``dataset``/``version`` are its labels (given once, in either place)."""
        if not isinstance(data, dict) or not isinstance(data.get("training_set"), dict):
            return data
        data, section = dict(data), dict(data["training_set"])
        for own, theirs in (("dataset", "labels"), ("version", "labels_version")):
            mine, given = data.get(own), section.pop(theirs, None)
            if mine is not None and given is not None and mine != given:
                raise ValueError(f"{own} {mine!r} and training_set.{theirs} {given!r} differ; give it once")
            if given is not None:
                data[own] = given
        if data.get("dataset") is None:
            raise ValueError("a training_set needs its labels: name the labels dataset in training_set.labels")
        data["training_set"] = section
        return data

    @model_validator(mode="after")
    def _valid_train_settings(self) -> TrainSpec:
        config = self.train_config()  # raises with the offending key named
        if self.training_set is not None and MODEL_KINDS[config.model] != "context":
            raise InvalidInput(
                f"A training_set gives the model per-row features, and row features need a ranking model "
                f"(deepfm, dcn, din, mmoe, moe); model {config.model!r} is a retrieval model. Train it on "
                "`dataset:` instead."
            )
        return self

    @property
    def run_name(self) -> str:
        return self.name or f"{self.train.get('model', 'mf')}-{self.dataset}"

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The trainer's :class:`TrainConfig` from ``train`` (plus ``overrides``), with clear errors."""
        values = {**self.train, **overrides}
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidSpec(f"Unknown train setting(s) {unknown}; valid settings are {sorted(known)}.")
        try:
            return TrainConfig(**values)
        except InvalidSpec:
            raise
        except (InvalidInput, TypeError, ValueError) as exc:
            raise InvalidSpec(f"Invalid train settings: {exc}") from exc

    def with_overrides(self, overrides: dict[str, Any]) -> TrainSpec:
        """A copy with dotted ``train`` keys set (``lr``, ``params.embedding_size``) or top-level keys
        (``dataset``, ``version``, ``workers``, ...) replaced."""
        data = self.model_dump()
        for key, value in overrides.items():
            head = key.split(".", 1)[0]
            if head in TrainSpec.model_fields and head != "train":
                data[head] = value
            else:
                _set_dotted(data["train"], key.removeprefix("train."), value)
        return _validated(data, "the overridden spec")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise InvalidInput(f"Cannot set {dotted!r}: {part!r} is not a mapping.")
        target = child
    target[leaf] = copy.deepcopy(value)


def load_train_spec(source: TrainSpec | dict[str, Any] | str | Path) -> TrainSpec:
    """A TrainSpec from a spec, a dict, a YAML string or a YAML file path."""
    if isinstance(source, TrainSpec):
        return source
    if isinstance(source, dict):
        return _validated(source, "the given mapping")
    data, origin = read_yaml_mapping(source, what="Training spec", needs="'dataset' and 'train'")
    return _validated(data, origin)


def _validated(data: dict[str, Any], origin: str) -> TrainSpec:
    try:
        return TrainSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in exc.errors())
        raise InvalidSpec(f"Invalid training spec in {origin}: {problems}", details={"errors": problems}) from exc
