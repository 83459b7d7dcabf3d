"""The SDK's front door: ``recplane.Client``, embedded (in-process) or remote (a recplane server).

``Client()`` runs the whole platform in this process against ``RECPLANE_HOME``; ``Client(url=..., token=...)``
talks to a server over HTTP. Both have the same methods, return the same types and raise the same errors,
so code written against one runs against the other. The facade holds no logic: each method hands the call to
the embedded or the remote implementation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
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
    from recplane.remote import RemoteClient
    from recplane.scheduler import Job, JobExplanation, JobSpec, QueueInfo, QueueSpec, UsageReport
    from recplane.serving.predict import PredictResult
    from recplane.serving.spec import DeploymentSpec
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
        log: bool | None = None,
        log_dataset: str | None = None,
    ) -> OnlineFeatures:
        """Online values of ``features`` (a feature service or ``["view:feature"]``) for ``entities``
        (``{"user_id": [1, 2]}`` or ``[{"user_id": 1}]``), with each view's freshness and a status per entity
        (ok / expired past the view's TTL / missing). An unknown feature raises InvalidInput naming it.
        ``log=True`` (default: the ``log_served_features`` setting) also appends the answer to the served-feature
        log (``log_dataset``, default ``feature_log``) for skew reports; the answer's ``request_id`` names it."""
        return self._impl.online_features(entities, features, now=now, log=log, log_dataset=log_dataset)

    def feature_skew(
        self,
        since: timedelta | datetime,
        *,
        features: str | Sequence[str] | None = None,
        dataset: str | None = None,
    ) -> SkewReport:
        """Train-serve skew of the values served from ``since`` (a time, or a period back from now): each logged
        value recomputed by the training-set engine as of its serving time, compared per feature (mismatch rate,
        differences, examples). ``features``: only these (a service or ``["view:feature", "view:*"]``);
        ``dataset``: the served-feature log (default: the ``feature_log_dataset`` setting)."""
        return self._impl.feature_skew(since, features=features, dataset=dataset)

    def register_model(
        self,
        name: str,
        *,
        run_id: str | None = None,
        artifact_uri: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        lineage: ModelLineage | dict[str, Any] | None = None,
        team: str | None = None,
        model_description: str | None = None,
    ) -> ModelVersion:
        """Register a new version of model ``name`` (created on first use) from a finished run's exported model
        (``run_id``: lineage, params and metrics come along) or from a folder with manifest.json (``artifact_uri``,
        a path or fsspec URL the platform can read). The files are copied into the registry."""
        return self._impl.register_model(
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
        )

    def list_models(self) -> list[RegisteredModel]:
        """Registered models this caller may see, with their newest version and current aliases."""
        return self._impl.list_models()

    def get_model(self, name: str) -> RegisteredModel:
        """One registered model: owner, description, newest version, where each alias points."""
        return self._impl.get_model(name)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, newest first."""
        return self._impl.list_model_versions(name)

    def get_model_version(self, name: str, version: int | str = "latest") -> ModelVersion:
        """One version: by number, by alias (``"production"``) or ``"latest"``."""
        return self._impl.get_model_version(name, version)

    def set_model_alias(self, name: str, alias: str, version: int | str, *, reason: str = "") -> AliasEvent:
        """Point ``alias`` at ``version`` (a number, or another alias to promote it); the move is kept in the
        alias history with who, when and ``reason``."""
        return self._impl.set_model_alias(name, alias, version, reason=reason)

    def delete_model_alias(self, name: str, alias: str, *, reason: str = "") -> AliasEvent:
        """Remove an alias; its history stays."""
        return self._impl.delete_model_alias(name, alias, reason=reason)

    def get_model_alias(self, name: str, alias: str, *, at: datetime | None = None) -> AliasPointer:
        """Where ``alias`` points now, or pointed at a past moment ``at`` (which version was in production when)."""
        return self._impl.get_model_alias(name, alias, at=at)

    def model_alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every alias move of a model (or of one alias), newest first: from which version to which, who, when, why."""
        return self._impl.model_alias_history(name, alias)

    def compare_model_versions(self, name: str, v1: int | str, v2: int | str) -> VersionComparison:
        """Two versions (numbers or aliases) side by side: every metric with its delta and the better version,
        and the training settings that differ."""
        return self._impl.compare_model_versions(name, v1, v2)

    def predict(
        self,
        deployment: DeploymentSpec | dict[str, Any] | str | Path,
        *,
        users: str | pa.Array | Sequence[Any],
        out: str,
        k: int | None = None,
        users_column: str = "user_id",
        chunk: int = 4096,
        progress: bool = False,
    ) -> PredictResult:
        """Batch inference: the deployment's (spec, dict or YAML) top-``k`` for every user of ``users`` (a dataset
        name, or ids), written as one new version of dataset ``out`` (created if missing), ``chunk`` users at a time."""
        return self._impl.predict(
            deployment, users=users, out=out, k=k, users_column=users_column, chunk=chunk, progress=progress
        )

    def submit_job(self, spec: JobSpec | dict[str, Any] | str | Path) -> Job:
        """Queue a job (spec, dict, YAML text or file): train, tune, materialize, predict, evaluate or custom. It
        starts when its queue's quota admits it; see ``explain_job`` while it waits."""
        return self._impl.submit_job(spec)

    def list_jobs(
        self,
        *,
        status: str | None = None,
        team: str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        pipeline: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs this caller may see, newest first (status: queued, admitted, running, succeeded, failed, cancelled)."""
        return self._impl.list_jobs(status=status, team=team, queue=queue, kind=kind, pipeline=pipeline, limit=limit)

    def get_job(self, job_id: str) -> Job:
        """One job: its spec, status, attempts, exit code, result and status history."""
        return self._impl.get_job(job_id)

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a job: at once if queued; a running one gets SIGTERM, then SIGKILL after the grace period."""
        return self._impl.cancel_job(job_id)

    def retry_job(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again (its retry count starts over)."""
        return self._impl.retry_job(job_id)

    def explain_job(self, job_id: str) -> JobExplanation:
        """Why a job is where it is, in plain words: for a waiting job, which quota or capacity holds it and which
        jobs are ahead."""
        return self._impl.explain_job(job_id)

    def job_logs(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        """The job's output as text chunks; ``follow`` keeps streaming until the job has finished."""
        return self._impl.job_logs(job_id, follow=follow)

    def wait_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Block until the job has finished and return it. An embedded client runs the scheduler loop meanwhile
        (unless a server or `recplane jobs worker` on the same catalog already schedules)."""
        return self._impl.wait_job(job_id, timeout=timeout)

    def apply_queue(self, spec: QueueSpec | dict[str, Any] | list[Any] | str | Path) -> list[QueueInfo]:
        """Create or update queues (one, a list, or YAML with ``queues:``): nominal quotas, cohort, borrowing
        limit, backend, usage budget. Administrators only."""
        return self._impl.apply_queue(spec)

    def list_queues(self) -> list[QueueInfo]:
        """Every queue with its quotas and what it holds now (resources used, jobs running and waiting)."""
        return self._impl.list_queues()

    def usage(
        self,
        *,
        team: str | None = None,
        since: timedelta | datetime = timedelta(days=7),
        group_by: Sequence[str] = ("team",),
    ) -> UsageReport:
        """Compute used by jobs since a time or over a window up to now (CPU-, GPU-, memory GB- and wall-hours, and
        cost at the configured prices), grouped by team, queue, kind, pipeline and/or job."""
        return self._impl.usage(team=team, since=since, group_by=group_by)

    def apply_pipeline(self, pipeline: PipelineSource) -> PipelineInfo:
        """Create or update a pipeline (a Pipeline, spec, mapping, YAML/.py file or ``module:attribute``); a new
        version is stored only when the spec changed."""
        return self._impl.apply_pipeline(pipeline)

    def list_pipelines(self) -> list[PipelineInfo]:
        """Every pipeline you may see (newest versions), with schedules, triggers and DAG edges."""
        return self._impl.list_pipelines()

    def get_pipeline(self, name: str) -> PipelineInfo:
        """One pipeline's newest version."""
        return self._impl.get_pipeline(name)

    def run_pipeline(
        self,
        pipeline: PipelineSource,
        *,
        params: dict[str, Any] | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> PipelineRun:
        """Start a run (a pipeline name — ``recsys-standard`` is built in — or a pipeline, applied first) with
        params over its defaults; ``wait`` blocks until it finished (embedded: this process drives it when no
        server does)."""
        return self._impl.run_pipeline(pipeline, params=params, wait=wait, timeout=timeout)

    def list_pipeline_runs(
        self, *, pipeline: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[PipelineRun]:
        """Pipeline runs, newest first (without their steps)."""
        return self._impl.list_pipeline_runs(pipeline=pipeline, status=status, limit=limit)

    def get_pipeline_run(self, run_id: str) -> PipelineRun:
        """One run with its steps: status, job, inputs, outputs, cache use and upstream steps (the DAG)."""
        return self._impl.get_pipeline_run(run_id)

    def wait_pipeline_run(self, run_id: str, *, timeout: float | None = None) -> PipelineRun:
        """Block until the run finished (TimeoutError past ``timeout`` seconds)."""
        return self._impl.wait_pipeline_run(run_id, timeout=timeout)

    def cancel_pipeline_run(self, run_id: str) -> PipelineRun:
        """Cancel a run: pending steps never start, running step jobs are cancelled."""
        return self._impl.cancel_pipeline_run(run_id)

    def backfill_pipeline(
        self, name: str, start: date, end: date, *, param: str = "date", params: dict[str, Any] | None = None
    ) -> list[PipelineRun]:
        """One run per day from ``start`` to ``end`` (inclusive), the ISO day passed as param ``param``."""
        return self._impl.backfill_pipeline(name, start, end, param=param, params=params)
