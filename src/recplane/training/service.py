"""Training as a platform operation: a spec in, a recorded run out.

:class:`TrainingService` resolves the spec's datasets to exact versions (the newest when none is pinned, read at
that version so that a concurrent write cannot slip in), opens a run in the catalog, trains with the run's
recorder attached (checkpoints under the run's folder), and returns the stored run with the trainer's result.
Resuming names an earlier run: the new run (its ``parent_id`` points back) reads the same dataset versions and
continues from that run's latest checkpoint. Tuning trials are ordinary runs grouped under their study.

A spec with a ``training_set`` trains on a point-in-time training set from the feature store: the labels dataset
(at its pinned version) joined with the features through :class:`~recplane.features.offline.TrainingSetBuilder`,
whose feature columns become the model's row features. The run records the lineage the builder returns (feature
service, view and source dataset versions) as tags and in ``training_set.json``; resuming rebuilds the set at
exactly those versions, so the resumed run trains on the identical table.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from recplane.auth import ADMIN, Principal
from recplane.errors import InvalidInput, NotFound
from recplane.lake import DatasetService
from recplane.training.bundle import write_bundle
from recplane.training.callbacks import TrainCallback
from recplane.training.runs import TRAINING_SET_FILE, NewRun, RunRecord, RunRecorder, RunStore
from recplane.training.spec import TrainSpec, load_train_spec
from recplane.training.trainer import TrainConfig, TrainResult, train
from recplane.training.tuning import TrialOutcome, TuneResult, tune

if TYPE_CHECKING:
    from recplane.features.offline import TrainingSetBuilder

__all__ = ["TrainedRun", "TrainingService"]

SPEC_FILE = "spec.yaml"
CHECKPOINTS = "checkpoints"
MODEL_FOLDER = "model"  # the exported model: weights, signature, inference form (recplane.training.export)
_FEATURE_TIME = "_feature_time"  # label time minus the feature lag, for the join only


@dataclass
class TrainedRun:
    """A finished run: its catalog record and, in this process, the trainer's full result (model included)."""

    run: RunRecord
    result: TrainResult


@dataclass(frozen=True)
class _Data:
    interactions: pa.Table
    version: int
    team: str
    item_features: pa.Table | None
    item_features_version: int | None
    user_features: pa.Table | None
    user_features_version: int | None
    training_set: dict[str, Any] | None = None  # the lineage of a training set, when the spec has one
    feature_columns: tuple[str, ...] = ()  # the columns the training set added


class TrainingService:
    """Runs training specs against the catalog's datasets and records every run.

    ``training_sets`` gives the feature store's training-set builder, asked for only when a spec has a
    ``training_set`` (building it opens DuckDB).
    """

    def __init__(
        self,
        datasets: DatasetService,
        runs: RunStore,
        training_sets: Callable[[], TrainingSetBuilder] | None = None,
    ) -> None:
        self.datasets, self.runs = datasets, runs
        self._training_sets = training_sets

    def train(
        self,
        spec: TrainSpec | dict[str, Any] | str | Path | None = None,
        *,
        principal: Principal = ADMIN,
        resume: str | None = None,
        callbacks: Sequence[TrainCallback] = (),
        group: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> TrainedRun:
        """Train ``spec`` (or, with ``resume`` and no spec, the resumed run's own spec) as a new recorded run."""
        parent, checkpoint = self._resume_point(resume, principal) if resume else (None, None)
        if spec is None:
            if parent is None:
                raise InvalidInput("Give a training spec, or the id of a run to resume.")
            spec = self._spec_of(parent)
        spec = load_train_spec(spec)
        pinned_set = None
        if parent is not None:
            spec = spec.model_copy(update=_pinned_versions(parent))
            pinned_set = self._training_set_of(parent) if spec.training_set is not None else None
        data = self._read(spec, principal, pinned_set)
        config = _with_row_features(spec, data)
        new_run = NewRun(
            model=config.model,
            config=dataclasses.asdict(config),
            team=data.team,
            name=spec.run_name,
            params=dict(config.params),
            dataset=spec.dataset,
            dataset_version=data.version,
            item_features=spec.item_features,
            item_features_version=data.item_features_version,
            tags={**spec.tags, **(tags or {}), **_lineage_tags(spec, data, parent), **_training_set_tags(data)},
            group=group,
            parent_id=parent.id if parent else None,
        )
        with RunRecorder.start(self.runs, new_run, principal=principal) as recorder:
            folder = self.runs.directory(recorder.run_id)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / SPEC_FILE).write_text(spec.to_yaml())
            if data.training_set is not None:
                (folder / TRAINING_SET_FILE).write_text(json.dumps(data.training_set, indent=2))
            config = dataclasses.replace(config, checkpoint_dir=str(folder / CHECKPOINTS))
            result = train(
                data.interactions,
                config,
                item_features=data.item_features,
                user_features=data.user_features,
                resume_from=checkpoint,
                callbacks=[recorder, *callbacks],
                workers=spec.workers,
            )
        if spec.export and result.example_batch is not None:
            _export(result, folder / MODEL_FOLDER, data)
        return TrainedRun(run=self.runs.get(recorder.run_id, principal=principal), result=result)

    def training_set(
        self,
        spec: TrainSpec | dict[str, Any] | str | Path,
        *,
        principal: Principal = ADMIN,
        resume: str | None = None,
    ) -> pa.Table:
        """The table a spec with a ``training_set`` trains on — at the versions run ``resume`` read, when given —
        with its lineage in the schema metadata (``recplane.features.lineage_of``)."""
        spec = load_train_spec(spec)
        if spec.training_set is None:
            raise InvalidInput("The spec has no training_set section; it trains on dataset rows as they are.")
        pinned = None
        if resume is not None:
            parent = self.runs.get(resume, principal=principal)
            spec, pinned = spec.model_copy(update=_pinned_versions(parent)), self._training_set_of(parent)
        return self._read(spec, principal, pinned).interactions

    def tune(
        self,
        spec: TrainSpec | dict[str, Any] | str | Path,
        *,
        trials: int,
        principal: Principal = ADMIN,
        study: str | None = None,
        seed: int = 0,
        callbacks: Sequence[TrainCallback] = (),
    ) -> TuneResult:
        """Search the spec's ``search`` space; every trial is a run in the study's group."""
        spec = load_train_spec(spec)
        extra = tuple(callbacks)

        def run_trial(
            spec: TrainSpec, *, callbacks: Sequence[TrainCallback], group: str, tags: dict[str, str]
        ) -> TrialOutcome:
            trained = self.train(spec, principal=principal, callbacks=[*callbacks, *extra], group=group, tags=tags)
            metrics = trained.run.metrics
            return TrialOutcome(trained.run.id, metrics.valid_metric or "", metrics.best_valid)

        bigger = _valid_metric_bigger(spec)
        return tune(spec, trials=trials, run_trial=run_trial, metric_bigger=bigger, study=study, seed=seed)

    def _resume_point(self, run_id: str, principal: Principal) -> tuple[RunRecord, Path]:
        parent = self.runs.get(run_id, principal=principal)
        checkpoint = self.runs.directory(parent.id) / CHECKPOINTS / "latest.pt"
        if not checkpoint.is_file():
            raise NotFound(
                f"Run {parent.id} has no checkpoint to resume from ({checkpoint} is missing); it wrote none "
                "before it stopped."
            )
        return parent, checkpoint

    def _spec_of(self, run: RunRecord) -> TrainSpec:
        path = self.runs.directory(run.id) / SPEC_FILE
        if not path.is_file():
            raise NotFound(f"Run {run.id} has no {SPEC_FILE}; pass the spec to resume it with.")
        return load_train_spec(path)

    def _training_set_of(self, run: RunRecord) -> dict[str, Any]:
        path = self.runs.directory(run.id) / TRAINING_SET_FILE
        if not path.is_file():
            raise NotFound(f"Run {run.id} has no {TRAINING_SET_FILE}: it did not train on a training set.")
        lineage: dict[str, Any] = json.loads(path.read_text())
        return lineage

    def _read(self, spec: TrainSpec, principal: Principal, pinned_set: dict[str, Any] | None = None) -> _Data:
        interactions, version, team = self._read_one(spec.dataset, spec.version, principal)
        items = self._read_one(
            spec.item_features, spec.item_features_version, principal, _key_and(spec.item_feature_columns, "item_id")
        )
        users = self._read_one(
            spec.user_features, spec.user_features_version, principal, _key_and(spec.user_feature_columns, "user_id")
        )
        data = _Data(interactions, version, team, items[0], items[1], users[0], users[1])
        if spec.training_set is None:
            return data
        table, lineage, columns = self._build_training_set(spec, interactions, version, principal, pinned_set)
        return dataclasses.replace(data, interactions=table, training_set=lineage, feature_columns=columns)

    def _build_training_set(
        self,
        spec: TrainSpec,
        labels: pa.Table,
        version: int,
        principal: Principal,
        pinned: dict[str, Any] | None,
    ) -> tuple[pa.Table, dict[str, Any], tuple[str, ...]]:
        """The labels (read at ``version``) joined with the spec's features; its lineage; the feature columns."""
        section = spec.training_set
        assert section is not None
        if self._training_sets is None:
            raise InvalidInput("This training service has no feature store; train from a Client to use training_set.")
        time_col = section.label_time_col
        if time_col not in labels.column_names:
            raise InvalidInput(
                f"The labels dataset {spec.dataset!r} has no label time column {time_col!r}; its columns are "
                f"{labels.column_names}. Set training_set.label_time_col."
            )
        probe = labels
        if section.lag_seconds:
            if _FEATURE_TIME in labels.column_names:
                raise InvalidInput(f"The labels may not have a column named {_FEATURE_TIME!r} with a feature_lag.")
            shifted = pc.subtract(labels.column(time_col), pa.scalar(timedelta(seconds=section.lag_seconds)))
            probe, time_col = labels.append_column(_FEATURE_TIME, shifted), _FEATURE_TIME
        joined = self._training_sets().build(
            probe,
            section.features,
            principal=principal,
            label_time_col=time_col,
            exclude_created_after_label=section.exclude_created_after_label,
            pinned=pinned,
        )
        from recplane.features.offline import LINEAGE_KEY, lineage_of

        lineage = {
            **lineage_of(joined),
            "labels": {"dataset": spec.dataset, "version": version},
            "label_time_col": section.label_time_col,
            "feature_lag": section.feature_lag,
        }
        table = joined.drop_columns([_FEATURE_TIME]) if _FEATURE_TIME in joined.column_names else joined
        columns = tuple(name for name in table.column_names if name not in labels.column_names)
        return table.replace_schema_metadata({LINEAGE_KEY: json.dumps(lineage)}), lineage, columns

    def _read_one(
        self, name: str | None, version: int | None, principal: Principal, columns: list[str] | None = None
    ) -> tuple[Any, Any, Any]:
        if name is None:
            return None, None, None
        info = self.datasets.get(name, principal=principal)
        pinned = info.current_version if version is None else version
        table = self.datasets.read(name, principal=principal, version=pinned, columns=columns)
        if table.num_rows == 0:
            raise InvalidInput(f"Dataset {name!r} has no rows at version {pinned}; load data before training.")
        return table, pinned, info.team


def _export(result: TrainResult, folder: Path, data: _Data) -> None:
    """The serving bundle (recplane.training.bundle): the exported model, id maps, features and interactions,
    plus ``row_features.json`` (the fitted row-feature encoder) for a ranker trained with row features."""
    items, users = data.item_features, data.user_features
    write_bundle(
        result,
        folder,
        interactions=data.interactions,
        item_features=items,
        user_features=users,
        row_features=result.row_encoder,
    )


def _with_row_features(spec: TrainSpec, data: _Data) -> TrainConfig:
    """The spec's TrainConfig; on a training set its feature columns are the row features unless the spec
    chose some of them (``train.row_feature_columns``)."""
    config = spec.train_config()
    if data.training_set is None or config.row_feature_columns:
        return config
    return dataclasses.replace(config, row_feature_columns=list(data.feature_columns))


def _training_set_tags(data: _Data) -> dict[str, str]:
    """The training set's lineage in short, searchable form: ``name@version`` lists."""
    lineage = data.training_set
    if lineage is None:
        return {}
    service = lineage.get("feature_service")
    tags = {
        "feature_service": f"{service['name']}@{service['version']}" if service else "",
        "features": ",".join(lineage.get("features", [])),
        "feature_views": ",".join(f"{name}@{v}" for name, v in lineage.get("feature_views", {}).items()),
        "feature_sources": ",".join(f"{name}@{v}" for name, v in lineage.get("sources", {}).items()),
        "feature_lag": lineage.get("feature_lag") or "",
    }
    return {key: value for key, value in tags.items() if value}


def _key_and(columns: list[str] | None, key: str) -> list[str] | None:
    return None if columns is None else [key, *(c for c in columns if c != key)]


def _lineage_tags(spec: TrainSpec, data: _Data, parent: RunRecord | None) -> dict[str, str]:
    """What the run record has no column for: the user-feature dataset read, and the run this one resumes."""
    tags = {"resumed_from": parent.id} if parent else {}
    if spec.user_features is not None:
        tags.update(user_features=spec.user_features, user_features_version=str(data.user_features_version))
    return tags


def _pinned_versions(parent: RunRecord) -> dict[str, Any]:
    """A resumed run reads exactly the data its parent read."""
    user_version = parent.tags.get("user_features_version")
    return {
        "version": parent.dataset_version,
        "item_features_version": parent.item_features_version,
        "user_features_version": int(user_version) if user_version else None,
    }


def _valid_metric_bigger(spec: TrainSpec) -> bool:
    from recplane.training.protocol import default_protocol

    return default_protocol(spec.train_config().kind).valid_metric_bigger
