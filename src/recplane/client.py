"""The SDK's front door: ``recplane.Client``, embedded (in-process) or remote (a recplane server).

``Client()`` runs the whole platform in this process against ``RECPLANE_HOME``; ``Client(url=..., token=...)``
talks to a server over HTTP. Both have the same methods, return the same types and raise the same errors,
so code written against one runs against the other. The facade holds no logic: each method hands the call to
the embedded or the remote implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from recplane.config import Settings

if TYPE_CHECKING:
    import pandas as pd

    from recplane.embedded import EmbeddedClient
    from recplane.features.materialize import MaterializeResult
    from recplane.features.registry import FeatureDefinitionInfo, FeaturePlan
    from recplane.features.serving import EntityRows, OnlineFeatures
    from recplane.features.spec import DefinitionKind, DefinitionSource
    from recplane.ingest import IngestResult
    from recplane.lake import DatasetInfo, DatasetSpec, DatasetStats, DatasetVersion, MaintenanceResult
    from recplane.lake.info import SchemaChangeResult
    from recplane.quality import QualityReport
    from recplane.remote import RemoteClient
    from recplane.training import TrainCallback, TrainedRun, TrainSpec, TuneResult
    from recplane.training.runs import RunComparison, RunRecord

__all__ = ["Client"]


class Client:
    """A connection to recplane: embedded when no URL is given, remote otherwise."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        home: str | Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings.for_home(home)
        self._impl: EmbeddedClient | RemoteClient
        if url or settings.url:
            from recplane.remote import RemoteClient

            self._impl = RemoteClient(url, token, settings=settings)
        else:
            from recplane.embedded import EmbeddedClient

            self._impl = EmbeddedClient(settings)

    @property
    def mode(self) -> str:
        """'embedded' or 'remote'."""
        return self._impl.mode

    def close(self) -> None:
        """Flush pending work and release connections."""
        self._impl.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def create_dataset(self, spec: DatasetSpec | dict[str, Any] | str | Path) -> DatasetInfo:
        """Register a dataset from a spec (object, dict, YAML text or YAML file); version 0 is empty."""
        return self._impl.create_dataset(spec)

    def apply_dataset(self, spec: DatasetSpec | dict[str, Any] | str | Path) -> SchemaChangeResult:
        """Create the dataset, or evolve it to this spec (additive and widening changes only)."""
        return self._impl.apply_dataset(spec)

    def get_dataset(self, name: str) -> DatasetInfo:
        """One dataset's registration, spec and current version."""
        return self._impl.get_dataset(name)

    def list_datasets(self) -> list[DatasetInfo]:
        """Every dataset this caller may see."""
        return self._impl.list_datasets()

    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        as_of: datetime | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Rows of a dataset, now, at a version, or as of a point in time (time travel)."""
        return self._impl.read(name, version=version, as_of=as_of, columns=columns)

    def history(self, name: str) -> list[DatasetVersion]:
        """Every version of a dataset, newest first."""
        return self._impl.history(name)

    def stats(self, name: str, *, version: int | None = None) -> DatasetStats:
        """Rows, bytes, files and per-column statistics of a version."""
        return self._impl.stats(name, version=version)

    def compact(self, name: str) -> MaintenanceResult:
        """Merge small files into large ones (a new version with the same rows)."""
        return self._impl.compact(name)

    def enforce_retention(self, name: str) -> MaintenanceResult:
        """Delete rows older than the dataset's retention and vacuum their files."""
        return self._impl.enforce_retention(name)

    def ingest(
        self,
        name: str,
        data: list[dict[str, Any]] | pa.Table | pa.RecordBatchReader | pd.DataFrame | str | Path,
        *,
        batch_id: str | None = None,
    ) -> IngestResult:
        """Validate and append rows; returns once they are committed. A repeated batch_id is a no-op."""
        return self._impl.ingest(name, data, batch_id=batch_id)

    def replace_dataset(
        self,
        name: str,
        data: pa.Table | pd.DataFrame | list[dict[str, Any]],
        *,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Make ``data`` the whole content of a dataset as one new version and return it; older versions stay
        readable. All or nothing: an invalid row or a repeated dedup key raises InvalidInput and writes nothing.
        An empty table clears the dataset. ``metadata`` (JSON) is recorded with the version (see ``history``)."""
        return self._impl.replace_dataset(name, data, metadata=metadata)

    def check(self, name: str, *, version: int | None = None, reference_version: int | None = None) -> QualityReport:
        """Run the dataset's quality rules on a version and store the report."""
        return self._impl.check(name, version=version, reference_version=reference_version)

    def quality_reports(self, name: str, *, limit: int = 20) -> list[QualityReport]:
        """Stored quality reports of a dataset, newest first."""
        return self._impl.quality_reports(name, limit=limit)

    def list_runs(
        self,
        *,
        model: str | None = None,
        dataset: str | None = None,
        status: str | None = None,
        group: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Training runs this caller may see, newest first (status: running, finished, failed or pruned)."""
        return self._impl.list_runs(model=model, dataset=dataset, status=status, group=group, limit=limit)

    def get_run(self, run_id: str) -> RunRecord:
        """One training run: config, data and code versions, metrics, epochs and where its files are."""
        return self._impl.get_run(run_id)

    def compare_runs(self, run_ids: Sequence[str]) -> RunComparison:
        """Two or more runs side by side: the settings that differ and every final metric, best marked."""
        return self._impl.compare_runs(run_ids)

    def train(
        self,
        spec: TrainSpec | dict[str, Any] | str | Path | None = None,
        *,
        resume: str | None = None,
        progress: bool = False,
        callbacks: Sequence[TrainCallback] = (),
    ) -> TrainedRun:
        """Train a spec (YAML path or text, dict or ``TrainSpec``) as a recorded run; ``resume``: continue a run
        from its latest checkpoint. Returns the run record and the trained model."""
        return self._impl.train(spec, resume=resume, progress=progress, callbacks=callbacks)

    def tune(
        self,
        spec: TrainSpec | dict[str, Any] | str | Path,
        *,
        trials: int,
        study: str | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> TuneResult:
        """Search the spec's ``search`` space with Optuna (TPE, median pruning); every trial is a run."""
        return self._impl.tune(spec, trials=trials, study=study, seed=seed, progress=progress)

    def plan_features(self, definitions: DefinitionSource, *, prune: bool = False) -> FeaturePlan:
        """Validate feature definitions (objects, YAML text, a file or folder) and say what apply would change;
        ``prune`` also plans deleting registered definitions that are not given."""
        return self._impl.plan_features(definitions, prune=prune)

    def apply_features(self, definitions: DefinitionSource, *, prune: bool = False) -> FeaturePlan:
        """Validate and register feature definitions: a new version for each created or changed one only."""
        return self._impl.apply_features(definitions, prune=prune)

    def list_features(self, *, kind: DefinitionKind | None = None) -> list[FeatureDefinitionInfo]:
        """The latest version of every registered entity, feature view and feature service (or of one kind)."""
        return self._impl.list_features(kind=kind)

    def get_feature_definition(
        self, kind: DefinitionKind, name: str, *, version: int | None = None
    ) -> FeatureDefinitionInfo:
        """One registered definition (kind: entity, feature_view or feature_service) at a version."""
        return self._impl.get_feature_definition(kind, name, version=version)

    def feature_history(self, kind: DefinitionKind, name: str) -> list[FeatureDefinitionInfo]:
        """Every registered version of one definition, newest first."""
        return self._impl.feature_history(kind, name)

    def training_set(
        self,
        labels: pa.Table | str,
        features: str | Sequence[str],
        *,
        label_time_col: str = "ts",
        exclude_created_after_label: bool = False,
        full_feature_names: bool = False,
        chunk_rows: int = 250_000,
        labels_version: int | None = None,
        write_to: str | None = None,
    ) -> pa.Table:
        """Labels (a table or dataset name) joined point-in-time correct with features (a feature service name or
        ``["view:feature", "view:*"]``): each value is the latest with event time <= the label's time, within
        the view's TTL. ``exclude_created_after_label`` ignores rows created after the label (backfill safety).
        ``write_to`` also stores it as a dataset version whose commit records the views and source versions used.
        """
        return self._impl.training_set(
            labels,
            features,
            label_time_col=label_time_col,
            exclude_created_after_label=exclude_created_after_label,
            full_feature_names=full_feature_names,
            chunk_rows=chunk_rows,
            labels_version=labels_version,
            write_to=write_to,
        )

    def materialize(
        self,
        views: str | Sequence[str] | None = None,
        *,
        service: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        incremental: bool = False,
        progress: bool = False,
    ) -> MaterializeResult:
        """Write each feature view's latest values per entity as of ``end`` (default now) to the online store,
        computed by the offline engine (so online equals the training set at ``end``). ``views``: names (default:
        every view, or those of ``service``); ``incremental``: only rows newer than each view's last run."""
        return self._impl.materialize(
            views, service=service, start=start, end=end, incremental=incremental, progress=progress
        )

    def online_features(
        self,
        entities: EntityRows,
        features: str | Sequence[str],
        *,
        now: datetime | None = None,
    ) -> OnlineFeatures:
        """Online values of ``features`` (a feature service or ``["view:feature"]``) for ``entities``
        (``{"user_id": [1, 2]}`` or ``[{"user_id": 1}]``), with each view's freshness and a status per entity
        (ok / expired past the view's TTL / missing). An unknown feature raises InvalidInput naming it."""
        return self._impl.online_features(entities, features, now=now)
