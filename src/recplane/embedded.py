"""The embedded client: the whole platform in this process, acting as the local administrator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
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
    from recplane.features.skew import SkewReport
    from recplane.features.spec import DefinitionKind, DefinitionSource
    from recplane.ingest import IngestResult
    from recplane.lake import DatasetInfo, DatasetSpec, DatasetStats, DatasetVersion, MaintenanceResult
    from recplane.lake.info import SchemaChangeResult
    from recplane.pipelines import PipelineInfo, PipelineRun
    from recplane.pipelines.service import PipelineSource
    from recplane.quality import QualityReport
    from recplane.registry import (
        AliasEvent,
        AliasPointer,
        ModelLineage,
        ModelVersion,
        RegisteredModel,
        VersionComparison,
    )
    from recplane.scheduler import Job, JobExplanation, JobSpec, QueueInfo, QueueSpec, UsageReport
    from recplane.serving.predict import PredictResult
    from recplane.serving.spec import DeploymentSpec
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
        self,
        entities: EntityRows,
        features: str | Sequence[str],
        *,
        now: datetime | None,
        log: bool | None = None,
        log_dataset: str | None = None,
    ) -> OnlineFeatures:
        return self.runtime.online_features.online_features(
            entities, features, principal=self._principal, now=now, log=log, log_dataset=log_dataset
        )

    def feature_skew(
        self, since: timedelta | datetime, *, features: str | Sequence[str] | None, dataset: str | None
    ) -> SkewReport:
        return self.runtime.feature_skew.report(since, principal=self._principal, features=features, dataset=dataset)

    def register_model(
        self,
        name: str,
        *,
        run_id: str | None,
        artifact_uri: str | None,
        description: str,
        tags: dict[str, str] | None,
        params: dict[str, Any] | None,
        metrics: dict[str, Any] | None,
        lineage: ModelLineage | dict[str, Any] | None,
        team: str | None,
        model_description: str | None,
    ) -> ModelVersion:
        return self.runtime.registry.register(
            name,
            run_id=run_id,
            artifact_uri=artifact_uri,
            description=description,
            tags=tags,
            params=params,
            metrics=metrics,
            lineage=lineage,
            team=team,
            model_description=model_description,
            principal=self._principal,
        )

    def list_models(self) -> list[RegisteredModel]:
        return self.runtime.registry.list_models(principal=self._principal)

    def get_model(self, name: str) -> RegisteredModel:
        return self.runtime.registry.get_model(name, principal=self._principal)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        return self.runtime.registry.list_versions(name, principal=self._principal)

    def get_model_version(self, name: str, version: int | str) -> ModelVersion:
        return self.runtime.registry.resolve(name, version, principal=self._principal)

    def set_model_alias(self, name: str, alias: str, version: int | str, *, reason: str) -> AliasEvent:
        return self.runtime.registry.set_alias(name, alias, version, reason=reason, principal=self._principal)

    def delete_model_alias(self, name: str, alias: str, *, reason: str) -> AliasEvent:
        return self.runtime.registry.delete_alias(name, alias, reason=reason, principal=self._principal)

    def get_model_alias(self, name: str, alias: str, *, at: datetime | None) -> AliasPointer:
        return self.runtime.registry.get_alias(name, alias, at=at, principal=self._principal)

    def model_alias_history(self, name: str, alias: str | None) -> list[AliasEvent]:
        return self.runtime.registry.alias_history(name, alias, principal=self._principal)

    def compare_model_versions(self, name: str, v1: int | str, v2: int | str) -> VersionComparison:
        return self.runtime.registry.compare(name, v1, v2, principal=self._principal)

    def predict(
        self,
        deployment: DeploymentSpec | dict[str, Any] | str | Path,
        *,
        users: str | pa.Array | Sequence[Any],
        out: str,
        k: int | None,
        users_column: str,
        chunk: int,
        progress: bool,
    ) -> PredictResult:
        from recplane.serving.predict import predict, rich_progress
        from recplane.serving.spec import load_deployment

        ids = users if isinstance(users, str | pa.Array | pa.ChunkedArray) else pa.array(list(users))
        spec = load_deployment(deployment)
        with contextlib.ExitStack() as stack:
            shown = stack.enter_context(rich_progress(f"predict {spec.name}")) if progress else None
            return predict(
                self.runtime,
                spec,
                users=ids,
                out=out,
                k=k,
                users_column=users_column,
                chunk=chunk,
                principal=self._principal,
                progress=shown,
            )

    def submit_job(self, spec: JobSpec | dict[str, Any] | str | Path) -> Job:
        return self.runtime.scheduler.submit(spec, principal=self._principal)

    def list_jobs(
        self,
        *,
        status: str | None,
        team: str | None,
        queue: str | None,
        kind: str | None,
        pipeline: str | None,
        limit: int,
    ) -> list[Job]:
        return self.runtime.scheduler.list_jobs(
            principal=self._principal, status=status, team=team, queue=queue, kind=kind, pipeline=pipeline,
            limit=limit,
        )

    def get_job(self, job_id: str) -> Job:
        return self.runtime.scheduler.get(job_id, principal=self._principal)

    def cancel_job(self, job_id: str) -> Job:
        return self.runtime.scheduler.cancel(job_id, principal=self._principal)

    def retry_job(self, job_id: str) -> Job:
        return self.runtime.scheduler.retry(job_id, principal=self._principal)

    def explain_job(self, job_id: str) -> JobExplanation:
        return self.runtime.scheduler.explain(job_id, principal=self._principal)

    def job_logs(self, job_id: str, *, follow: bool) -> Iterator[str]:
        return self.runtime.scheduler.logs(job_id, principal=self._principal, follow=follow)

    def wait_job(self, job_id: str, *, timeout: float | None) -> Job:
        self.runtime.scheduler.start()  # stands by if a server or worker already schedules this catalog
        return self.runtime.scheduler.wait(job_id, principal=self._principal, timeout=timeout)

    def apply_queue(self, spec: QueueSpec | dict[str, Any] | list[Any] | str | Path) -> list[QueueInfo]:
        return self.runtime.scheduler.apply_queues(spec, principal=self._principal)

    def list_queues(self) -> list[QueueInfo]:
        return self.runtime.scheduler.list_queues()

    def usage(self, *, team: str | None, since: timedelta | datetime, group_by: Sequence[str]) -> UsageReport:
        return self.runtime.scheduler.usage(principal=self._principal, team=team, since=since, group_by=group_by)

    def apply_pipeline(self, pipeline: PipelineSource) -> PipelineInfo:
        return self.runtime.pipelines.apply(pipeline, principal=self._principal)

    def list_pipelines(self) -> list[PipelineInfo]:
        return self.runtime.pipelines.list(principal=self._principal)

    def get_pipeline(self, name: str) -> PipelineInfo:
        return self.runtime.pipelines.get(name, principal=self._principal)

    def run_pipeline(
        self, pipeline: PipelineSource, *, params: dict[str, Any] | None, wait: bool, timeout: float | None
    ) -> PipelineRun:
        run = self.runtime.pipelines.run(pipeline, params=params, principal=self._principal)
        return self.wait_pipeline_run(run.id, timeout=timeout) if wait else run

    def list_pipeline_runs(self, *, pipeline: str | None, status: str | None, limit: int) -> list[PipelineRun]:
        return self.runtime.pipelines.list_runs(principal=self._principal, pipeline=pipeline, status=status,
                                                limit=limit)

    def get_pipeline_run(self, run_id: str) -> PipelineRun:
        return self.runtime.pipelines.get_run(run_id, principal=self._principal)

    def wait_pipeline_run(self, run_id: str, *, timeout: float | None) -> PipelineRun:
        self.runtime.scheduler.start()  # both loops stand by if a server or worker already leads this catalog
        self.runtime.pipelines.start()
        return self.runtime.pipelines.wait(run_id, principal=self._principal, timeout=timeout)

    def cancel_pipeline_run(self, run_id: str) -> PipelineRun:
        return self.runtime.pipelines.cancel_run(run_id, principal=self._principal)

    def backfill_pipeline(
        self, name: str, start: date, end: date, *, param: str, params: dict[str, Any] | None
    ) -> list[PipelineRun]:
        return self.runtime.pipelines.backfill(name, start, end, param=param, params=params,
                                               principal=self._principal)

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
