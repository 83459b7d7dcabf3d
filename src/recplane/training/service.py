"""Training as a platform operation: a spec in, a recorded run out.

:class:`TrainingService` resolves the spec's datasets to exact versions (the newest when none is pinned, read at
that version so that a concurrent write cannot slip in), opens a run in the catalog, trains with the run's
recorder attached (checkpoints under the run's folder), and returns the stored run with the trainer's result.
Resuming names an earlier run: the new run (its ``parent_id`` points back) reads the same dataset versions and
continues from that run's latest checkpoint. Tuning trials are ordinary runs grouped under their study.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recplane.auth import ADMIN, Principal
from recplane.errors import InvalidInput, NotFound
from recplane.lake import DatasetService
from recplane.training.callbacks import TrainCallback
from recplane.training.export import export_model
from recplane.training.runs import NewRun, RunRecord, RunRecorder, RunStore
from recplane.training.spec import TrainSpec, load_train_spec
from recplane.training.trainer import TrainResult, train
from recplane.training.tuning import TrialOutcome, TuneResult, tune

__all__ = ["TrainedRun", "TrainingService"]

SPEC_FILE = "spec.yaml"
CHECKPOINTS = "checkpoints"
MODEL_FOLDER = "model"  # the exported model: weights, signature, inference form (recplane.training.export)


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


class TrainingService:
    """Runs training specs against the catalog's datasets and records every run."""

    def __init__(self, datasets: DatasetService, runs: RunStore) -> None:
        self.datasets, self.runs = datasets, runs

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
        if parent is not None:
            spec = spec.model_copy(update=_pinned_versions(parent))
        data = self._read(spec, principal)
        config = spec.train_config()
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
            tags={**spec.tags, **(tags or {}), **_lineage_tags(spec, data, parent)},
            group=group,
            parent_id=parent.id if parent else None,
        )
        with RunRecorder.start(self.runs, new_run, principal=principal) as recorder:
            folder = self.runs.directory(recorder.run_id)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / SPEC_FILE).write_text(spec.to_yaml())
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
            _export(result, folder / MODEL_FOLDER)
        return TrainedRun(run=self.runs.get(recorder.run_id, principal=principal), result=result)

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

    def _read(self, spec: TrainSpec, principal: Principal) -> _Data:
        interactions, version, team = self._read_one(spec.dataset, spec.version, principal)
        items = self._read_one(
            spec.item_features, spec.item_features_version, principal, _key_and(spec.item_feature_columns, "item_id")
        )
        users = self._read_one(
            spec.user_features, spec.user_features_version, principal, _key_and(spec.user_feature_columns, "user_id")
        )
        return _Data(interactions, version, team, items[0], items[1], users[0], users[1])

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


def _export(result: TrainResult, folder: Path) -> None:
    """The serving bundle: the exported model plus the raw ids behind model ids (row ``i`` is model id ``i+1``)."""
    export_model(result.model, folder, example_batch=result.example_batch or {})
    pq.write_table(pa.table({"user_id": result.user_map.values}), folder / "user_ids.parquet")
    pq.write_table(pa.table({"item_id": result.item_map.values}), folder / "item_ids.parquet")


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
