"""The embedded client: the whole platform in this process, acting as the local administrator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from recplane.auth import ADMIN
from recplane.config import Settings
from recplane.runtime import Runtime

if TYPE_CHECKING:
    import pandas as pd

    from recplane.features.materialize import MaterializeResult
    from recplane.features.registry import FeatureDefinitionInfo, FeaturePlan
    from recplane.features.serving import EntityRows, OnlineFeatures
    from recplane.features.spec import DefinitionKind, DefinitionSource
    from recplane.ingest import IngestResult
    from recplane.lake import DatasetInfo, DatasetSpec, DatasetStats, DatasetVersion, MaintenanceResult
    from recplane.lake.info import SchemaChangeResult
    from recplane.quality import QualityReport
    from recplane.training import TrainCallback, TrainedRun, TrainSpec, TuneResult
    from recplane.training.runs import RunComparison, RunRecord

__all__ = ["EmbeddedClient"]


class EmbeddedClient:
    """Client() without a URL: runs against RECPLANE_HOME (SQLite catalog, local Delta tables)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(self.settings)
        self._principal = ADMIN

    @property
    def mode(self) -> str:
        return "embedded"

    def close(self) -> None:
        self.runtime.close()

    def create_dataset(self, spec: DatasetSpec | dict[str, Any] | str | Path) -> DatasetInfo:
        from recplane.lake import load_spec

        return self.runtime.datasets.create(load_spec(spec), principal=self._principal)

    def apply_dataset(self, spec: DatasetSpec | dict[str, Any] | str | Path) -> SchemaChangeResult:
        from recplane.lake import load_spec

        return self.runtime.datasets.apply(load_spec(spec), principal=self._principal)

    def get_dataset(self, name: str) -> DatasetInfo:
        return self.runtime.datasets.get(name, principal=self._principal)

    def list_datasets(self) -> list[DatasetInfo]:
        return self.runtime.datasets.list(principal=self._principal)

    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        as_of: datetime | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        return self.runtime.datasets.read(
            name, principal=self._principal, version=version, as_of=as_of, columns=columns
        )

    def history(self, name: str) -> list[DatasetVersion]:
        return self.runtime.datasets.history(name, principal=self._principal)

    def stats(self, name: str, *, version: int | None = None) -> DatasetStats:
        return self.runtime.datasets.stats(name, principal=self._principal, version=version)

    def compact(self, name: str) -> MaintenanceResult:
        return self.runtime.datasets.compact(name, principal=self._principal)

    def enforce_retention(self, name: str) -> MaintenanceResult:
        return self.runtime.datasets.enforce_retention(name, principal=self._principal)

    def ingest(
        self,
        name: str,
        data: list[dict[str, Any]] | pa.Table | pa.RecordBatchReader | pd.DataFrame | str | Path,
        *,
        batch_id: str | None = None,
    ) -> IngestResult:
        return self.runtime.ingestion.ingest(name, data, principal=self._principal, batch_id=batch_id)

    def replace_dataset(
        self,
        name: str,
        data: pa.Table | pd.DataFrame | list[dict[str, Any]],
        *,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        from recplane.lake.datasets import replacement_table

        return self.runtime.datasets.replace(
            name, replacement_table(data), principal=self._principal, metadata=metadata
        )

    def check(self, name: str, *, version: int | None = None, reference_version: int | None = None) -> QualityReport:
        return self.runtime.quality.check(
            name, principal=self._principal, version=version, reference_version=reference_version
        )

    def quality_reports(self, name: str, *, limit: int = 20) -> list[QualityReport]:
        return self.runtime.quality.reports(name, principal=self._principal, limit=limit)

    def list_runs(
        self,
        *,
        model: str | None = None,
        dataset: str | None = None,
        status: str | None = None,
        group: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        return self.runtime.runs.list(
            principal=self._principal, model=model, dataset=dataset, status=status, group=group, limit=limit
        )

    def get_run(self, run_id: str) -> RunRecord:
        return self.runtime.runs.get(run_id, principal=self._principal)

    def compare_runs(self, run_ids: Sequence[str]) -> RunComparison:
        return self.runtime.runs.compare(run_ids, principal=self._principal)

    def train(
        self,
        spec: TrainSpec | dict[str, Any] | str | Path | None,
        *,
        resume: str | None,
        progress: bool,
        callbacks: Sequence[TrainCallback],
    ) -> TrainedRun:
        with _progress(progress) as shown:
            return self.runtime.training.train(
                spec, principal=self._principal, resume=resume, callbacks=[*shown, *callbacks]
            )

    def tune(
        self,
        spec: TrainSpec | dict[str, Any] | str | Path,
        *,
        trials: int,
        study: str | None,
        seed: int,
        progress: bool,
    ) -> TuneResult:
        with _progress(progress) as shown:
            return self.runtime.training.tune(
                spec, trials=trials, principal=self._principal, study=study, seed=seed, callbacks=shown
            )

    def plan_features(self, definitions: DefinitionSource, *, prune: bool) -> FeaturePlan:
        from recplane.features.spec import load_feature_definitions

        loaded = load_feature_definitions(definitions)
        return self.runtime.features.plan(loaded, principal=self._principal, prune=prune)

    def apply_features(self, definitions: DefinitionSource, *, prune: bool) -> FeaturePlan:
        from recplane.features.spec import load_feature_definitions

        loaded = load_feature_definitions(definitions)
        return self.runtime.features.apply(loaded, principal=self._principal, prune=prune)

    def list_features(self, *, kind: DefinitionKind | None) -> list[FeatureDefinitionInfo]:
        return self.runtime.features.list(kind=kind)

    def get_feature_definition(self, kind: DefinitionKind, name: str, *, version: int | None) -> FeatureDefinitionInfo:
        return self.runtime.features.get(kind, name, version=version)

    def feature_history(self, kind: DefinitionKind, name: str) -> list[FeatureDefinitionInfo]:
        return self.runtime.features.history(kind, name)

    def training_set(
        self,
        labels: pa.Table | str,
        features: str | Sequence[str],
        *,
        label_time_col: str,
        exclude_created_after_label: bool,
        full_feature_names: bool,
        chunk_rows: int,
        labels_version: int | None,
        write_to: str | None,
    ) -> pa.Table:
        return self.runtime.training_sets.build(
            labels,
            features,
            principal=self._principal,
            label_time_col=label_time_col,
            exclude_created_after_label=exclude_created_after_label,
            full_feature_names=full_feature_names,
            chunk_rows=chunk_rows,
            labels_version=labels_version,
            write_to=write_to,
        )

    def materialize(
        self,
        views: str | Sequence[str] | None,
        *,
        service: str | None,
        start: datetime | None,
        end: datetime | None,
        incremental: bool,
        progress: bool,
    ) -> MaterializeResult:
        return self.runtime.materializer.materialize(
            views,
            service=service,
            principal=self._principal,
            start=start,
            end=end,
            incremental=incremental,
            progress=progress,
        )

    def online_features(
        self, entities: EntityRows, features: str | Sequence[str], *, now: datetime | None
    ) -> OnlineFeatures:
        return self.runtime.online_features.online_features(entities, features, principal=self._principal, now=now)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[list[TrainCallback]]:
    """A Rich progress display for the run when asked, stopped however the run ends."""
    if not enabled:
        yield []
        return
    from recplane.training.progress import RichProgress

    display = RichProgress()
    try:
        yield [display]
    finally:
        display.close()
