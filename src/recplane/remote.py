"""The remote client: the same SDK over HTTP to a recplane server.

Errors come back as the same classes the server raised. Ingestion always sends an Idempotency-Key (one is
generated when the caller gives none), so the automatic retries on 429 and on dropped connections can never
append a batch twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pyarrow as pa
from pydantic import TypeAdapter

from recplane.config import Settings
from recplane.errors import BackendUnavailable, InvalidInput, Overloaded, RecplaneError, error_from_dict
from recplane.ingest import IngestResult
from recplane.lake import DatasetInfo, DatasetStats, DatasetVersion, MaintenanceResult, load_spec
from recplane.lake.datasets import replacement_table
from recplane.lake.info import SchemaChangeResult
from recplane.quality import QualityReport
from recplane.wire import ARROW_STREAM, table_from_ipc, table_to_ipc

if TYPE_CHECKING:
    import pandas as pd

    from recplane.lake import DatasetSpec
    from recplane.registry import (
        AliasEvent,
        AliasPointer,
        ModelLineage,
        ModelVersion,
        RegisteredModel,
        VersionComparison,
    )
    from recplane.training.runs import RunComparison, RunRecord

__all__ = ["RemoteClient"]

_RETRIES = 8
_COMMIT_METADATA = "Commit-Metadata"  # the header PUT /v1/datasets/{name}/rows reads commit metadata from
_CHUNK_ROWS = 200_000


class RemoteClient:
    """Client(url=..., token=...): every call is a request to a recplane server."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        settings: Settings | None = None,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.url = (url or self.settings.url or "").rstrip("/")
        secret = token or self.settings.token
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    @property
    def mode(self) -> str:
        return "remote"

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"Cannot reach the recplane server at {self.url}: {exc}") from exc
        if response.is_success:
            return response
        raise _error_of(response)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def create_dataset(self, spec: DatasetSpec | dict[str, Any] | str | Path) -> DatasetInfo:
        body = load_spec(spec).to_dict()
        return DatasetInfo.model_validate(self._json("POST", "/v1/datasets", json=body))

    def apply_dataset(self, spec: DatasetSpec | dict[str, Any] | str | Path) -> SchemaChangeResult:
        parsed = load_spec(spec)
        payload = self._json("PUT", f"/v1/datasets/{parsed.name}", json=parsed.to_dict())
        return SchemaChangeResult.model_validate(payload)

    def get_dataset(self, name: str) -> DatasetInfo:
        return DatasetInfo.model_validate(self._json("GET", f"/v1/datasets/{name}"))

    def list_datasets(self) -> list[DatasetInfo]:
        return TypeAdapter(list[DatasetInfo]).validate_python(self._json("GET", "/v1/datasets"))

    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        as_of: datetime | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        params: dict[str, Any] = {"format": "arrow"}
        if version is not None:
            params["version"] = version
        if as_of is not None:
            params["as_of"] = as_of.isoformat()
        if columns:
            params["columns"] = columns
        return table_from_ipc(self._request("GET", f"/v1/datasets/{name}/rows", params=params).content)

    def history(self, name: str) -> list[DatasetVersion]:
        payload = self._json("GET", f"/v1/datasets/{name}/history")
        return TypeAdapter(list[DatasetVersion]).validate_python(payload)

    def stats(self, name: str, *, version: int | None = None) -> DatasetStats:
        params = {"version": version} if version is not None else {}
        return DatasetStats.model_validate(self._json("GET", f"/v1/datasets/{name}/stats", params=params))

    def compact(self, name: str) -> MaintenanceResult:
        return MaintenanceResult.model_validate(self._json("POST", f"/v1/datasets/{name}/compact"))

    def enforce_retention(self, name: str) -> MaintenanceResult:
        return MaintenanceResult.model_validate(self._json("POST", f"/v1/datasets/{name}/retention"))

    def ingest(
        self,
        name: str,
        data: list[dict[str, Any]] | pa.Table | pa.RecordBatchReader | pd.DataFrame | str | Path,
        *,
        batch_id: str | None = None,
    ) -> IngestResult:
        key = batch_id or f"sdk-{uuid.uuid4()}"
        if isinstance(data, list):
            return self._send_batch(name, orjson.dumps(data, default=str), "application/json", key)
        results = [
            self._send_batch(name, table_to_ipc(chunk), ARROW_STREAM, key if index == 0 else f"{key}#{index}")
            for index, chunk in enumerate(_arrow_chunks(data))
        ]
        return _merge_results(results, key)

    def _send_batch(self, name: str, body: bytes, content_type: str, key: str) -> IngestResult:
        headers = {"Content-Type": content_type, "Idempotency-Key": key}
        for attempt in range(_RETRIES):
            try:
                payload = self._json("POST", f"/v1/datasets/{name}/events", content=body, headers=headers)
                return IngestResult.model_validate(payload)
            except Overloaded as exc:
                time.sleep(min(exc.retry_after, 0.05 * 2**attempt))
            except BackendUnavailable:
                if attempt == _RETRIES - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise Overloaded(f"The server stayed overloaded for {_RETRIES} attempts; try again later.")

    def replace_dataset(
        self,
        name: str,
        data: pa.Table | pd.DataFrame | list[dict[str, Any]],
        *,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        # One request, never chunked: a replace split over requests would not be one version.
        headers = {"Content-Type": ARROW_STREAM}
        if metadata:
            headers[_COMMIT_METADATA] = json.dumps(metadata)  # ASCII-only, as headers must be
        body = table_to_ipc(replacement_table(data))
        payload = self._json("PUT", f"/v1/datasets/{name}/rows", content=body, headers=headers)
        return int(payload["version"])

    def check(self, name: str, *, version: int | None = None, reference_version: int | None = None) -> QualityReport:
        body = {"version": version, "reference_version": reference_version}
        return QualityReport.model_validate(self._json("POST", f"/v1/datasets/{name}/checks", json=body))

    def quality_reports(self, name: str, *, limit: int = 20) -> list[QualityReport]:
        payload = self._json("GET", f"/v1/datasets/{name}/checks", params={"limit": limit})
        return TypeAdapter(list[QualityReport]).validate_python(payload)

    def list_runs(
        self,
        *,
        model: str | None = None,
        dataset: str | None = None,
        status: str | None = None,
        group: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        from recplane.training.runs import RunRecord

        filters = {"model": model, "dataset": dataset, "status": status, "group": group}
        params: dict[str, Any] = {key: value for key, value in filters.items() if value is not None}
        payload = self._json("GET", "/v1/runs", params={**params, "limit": limit})
        return TypeAdapter(list[RunRecord]).validate_python(payload)

    def get_run(self, run_id: str) -> RunRecord:
        from recplane.training.runs import RunRecord

        return RunRecord.model_validate(self._json("GET", f"/v1/runs/{run_id}"))

    def compare_runs(self, run_ids: Sequence[str]) -> RunComparison:
        from recplane.training.runs import RunComparison

        payload = self._json("GET", "/v1/runs/compare", params={"ids": ",".join(run_ids)})
        return RunComparison.model_validate(payload)

    def train(self, spec: Any, **_: Any) -> Any:
        raise _training_needs_embedded()

    def tune(self, spec: Any, **_: Any) -> Any:
        raise _training_needs_embedded()

    def predict(self, deployment: Any, **_: Any) -> Any:
        # Batch inference is compute over the lake, like training: it belongs in a scheduler job.
        raise InvalidInput(
            "A remote Client cannot run batch inference yet: server-side jobs arrive with the scheduler. Run "
            "`recplane predict` (or an embedded Client) pointed at the same catalog and lake (RECPLANE_DATABASE_URL, "
            "RECPLANE_LAKE_URI); the predictions dataset is then visible through the server."
        )

    def plan_features(self, definitions: Any, **_: Any) -> Any:
        raise _features_need_embedded()

    def apply_features(self, definitions: Any, **_: Any) -> Any:
        raise _features_need_embedded()

    def list_features(self, **_: Any) -> Any:
        raise _features_need_embedded()

    def get_feature_definition(self, kind: Any, name: Any, **_: Any) -> Any:
        raise _features_need_embedded()

    def feature_history(self, kind: Any, name: Any) -> Any:
        raise _features_need_embedded()

    def training_set(self, labels: Any, features: Any, **_: Any) -> Any:
        raise _features_need_embedded()

    def materialize(self, views: Any, **_: Any) -> Any:
        # Materialization is compute over the lake (like a training set): it belongs in a scheduler job.
        raise _features_need_embedded()

    def online_features(
        self,
        entities: Any,
        features: Any,
        *,
        now: datetime | None = None,
        log: bool | None = None,
        log_dataset: str | None = None,
    ) -> Any:
        from recplane.features.serving import OnlineFeatures

        body: dict[str, Any] = {
            "entities": entities if isinstance(entities, dict) else list(entities),
            "features": features if isinstance(features, str) else list(features),
            "now": now.isoformat() if now is not None else None,
            "log": log,
            "log_dataset": log_dataset,
        }
        payload = self._json(
            "POST",
            "/v1/features/online",
            content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=str),
            headers={"Content-Type": "application/json"},
        )
        return OnlineFeatures.from_dict(payload)

    def feature_skew(self, since: Any, *, features: Any = None, dataset: str | None = None) -> Any:
        from recplane.features.skew import SkewReport, since_text

        body = {
            "since": since_text(since),
            "features": features if features is None or isinstance(features, str) else list(features),
            "dataset": dataset,
        }
        return SkewReport.model_validate(self._json("POST", "/v1/features/skew", json=body))

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
        from recplane.registry import ModelLineage, ModelVersion

        if isinstance(lineage, ModelLineage):
            lineage = lineage.model_dump(mode="json", exclude_unset=True)
        body = {
            "run_id": run_id,
            "artifact_uri": artifact_uri,
            "description": description,
            "tags": tags,
            "params": params,
            "metrics": metrics,
            "lineage": lineage,
            "team": team,
            "model_description": model_description,
        }
        return ModelVersion.model_validate(self._json("POST", f"/v1/models/{name}/versions", json=body))

    def list_models(self) -> list[RegisteredModel]:
        from recplane.registry import RegisteredModel

        return TypeAdapter(list[RegisteredModel]).validate_python(self._json("GET", "/v1/models"))

    def get_model(self, name: str) -> RegisteredModel:
        from recplane.registry import RegisteredModel

        return RegisteredModel.model_validate(self._json("GET", f"/v1/models/{name}"))

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        from recplane.registry import ModelVersion

        return TypeAdapter(list[ModelVersion]).validate_python(self._json("GET", f"/v1/models/{name}/versions"))

    def get_model_version(self, name: str, version: int | str = "latest") -> ModelVersion:
        from recplane.registry import ModelVersion

        return ModelVersion.model_validate(self._json("GET", f"/v1/models/{name}/versions/{version}"))

    def set_model_alias(self, name: str, alias: str, version: int | str, *, reason: str = "") -> AliasEvent:
        from recplane.registry import AliasEvent

        body = {"version": version, "reason": reason}
        return AliasEvent.model_validate(self._json("PUT", f"/v1/models/{name}/aliases/{alias}", json=body))

    def delete_model_alias(self, name: str, alias: str, *, reason: str = "") -> AliasEvent:
        from recplane.registry import AliasEvent

        payload = self._json("DELETE", f"/v1/models/{name}/aliases/{alias}", params={"reason": reason})
        return AliasEvent.model_validate(payload)

    def get_model_alias(self, name: str, alias: str, *, at: datetime | None = None) -> AliasPointer:
        from recplane.registry import AliasPointer

        params = {"at": at.isoformat()} if at is not None else {}
        return AliasPointer.model_validate(self._json("GET", f"/v1/models/{name}/aliases/{alias}", params=params))

    def model_alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        from recplane.registry import AliasEvent

        params = {"alias": alias} if alias is not None else {}
        payload = self._json("GET", f"/v1/models/{name}/history", params=params)
        return TypeAdapter(list[AliasEvent]).validate_python(payload)

    def compare_model_versions(self, name: str, v1: int | str, v2: int | str) -> VersionComparison:
        from recplane.registry import VersionComparison

        payload = self._json("GET", f"/v1/models/{name}/compare", params={"v1": str(v1), "v2": str(v2)})
        return VersionComparison.model_validate(payload)

    def submit_job(self, spec: Any) -> Any:
        from recplane.scheduler import Job
        from recplane.scheduler.spec import load_job_spec

        body = _inline_train_spec(load_job_spec(spec)).model_dump(mode="json")
        return Job.model_validate(self._json("POST", "/v1/jobs", json=body))

    def list_jobs(
        self,
        *,
        status: str | None = None,
        team: str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        pipeline: str | None = None,
        limit: int = 100,
    ) -> Any:
        from recplane.scheduler import Job

        filters = {"status": status, "team": team, "queue": queue, "kind": kind, "pipeline": pipeline}
        params: dict[str, Any] = {key: value for key, value in filters.items() if value is not None}
        payload = self._json("GET", "/v1/jobs", params={**params, "limit": limit})
        return TypeAdapter(list[Job]).validate_python(payload)

    def get_job(self, job_id: str) -> Any:
        from recplane.scheduler import Job

        return Job.model_validate(self._json("GET", f"/v1/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> Any:
        from recplane.scheduler import Job

        return Job.model_validate(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def retry_job(self, job_id: str) -> Any:
        from recplane.scheduler import Job

        return Job.model_validate(self._json("POST", f"/v1/jobs/{job_id}/retry"))

    def explain_job(self, job_id: str) -> Any:
        from recplane.scheduler import JobExplanation

        return JobExplanation.model_validate(self._json("GET", f"/v1/jobs/{job_id}/explain"))

    def job_logs(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        params = {"follow": str(follow).lower()}
        try:  # a followed log may stay quiet for long: no read timeout
            with self._http.stream("GET", f"/v1/jobs/{job_id}/logs", params=params, timeout=None) as response:
                if not response.is_success:
                    response.read()
                    raise _error_of(response)
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"Cannot reach the recplane server at {self.url}: {exc}") from exc

    def wait_job(self, job_id: str, *, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Job {job_id} is still {job.status} after {timeout:g} s.")
            time.sleep(0.25)

    def apply_queue(self, spec: Any) -> Any:
        from recplane.scheduler import QueueInfo, load_queue_specs

        body = [queue.model_dump(mode="json") for queue in load_queue_specs(spec)]
        return TypeAdapter(list[QueueInfo]).validate_python(self._json("PUT", "/v1/queues", json=body))

    def list_queues(self) -> Any:
        from recplane.scheduler import QueueInfo

        return TypeAdapter(list[QueueInfo]).validate_python(self._json("GET", "/v1/queues"))

    def usage(self, *, team: str | None = None, since: Any = None, group_by: Sequence[str] = ("team",)) -> Any:
        from datetime import UTC, timedelta

        from recplane.scheduler import UsageReport

        window = since if isinstance(since, timedelta) else None
        if isinstance(since, datetime):
            window = datetime.now(UTC) - since
        seconds = (window or timedelta(days=7)).total_seconds()
        params: dict[str, Any] = {"since": f"{max(seconds, 0):.3f}s", "group_by": ",".join(group_by)}
        if team is not None:
            params["team"] = team
        return UsageReport.model_validate(self._json("GET", "/v1/usage", params=params))

    def apply_pipeline(self, pipeline: Any) -> Any:
        from recplane.pipelines import PipelineInfo, load_pipeline

        body = load_pipeline(pipeline).model_dump(mode="json", by_alias=True)
        return PipelineInfo.model_validate(self._json("PUT", "/v1/pipelines", json=body))

    def list_pipelines(self) -> Any:
        from recplane.pipelines import PipelineInfo

        return TypeAdapter(list[PipelineInfo]).validate_python(self._json("GET", "/v1/pipelines"))

    def get_pipeline(self, name: str) -> Any:
        from recplane.pipelines import PipelineInfo

        return PipelineInfo.model_validate(self._json("GET", f"/v1/pipelines/{name}"))

    def run_pipeline(self, pipeline: Any, *, params: dict[str, Any] | None = None, wait: bool = False,
                     timeout: float | None = None) -> Any:
        from recplane.pipelines import PipelineRun

        name = pipeline if isinstance(pipeline, str) and "\n" not in pipeline and _is_pipeline_name(pipeline) \
            else self.apply_pipeline(pipeline).name
        run = PipelineRun.model_validate(
            self._json("POST", f"/v1/pipelines/{name}/runs", json={"params": params or {}})
        )
        return self.wait_pipeline_run(run.id, timeout=timeout) if wait else run

    def list_pipeline_runs(self, *, pipeline: str | None = None, status: str | None = None, limit: int = 50) -> Any:
        from recplane.pipelines import PipelineRun

        filters = {"pipeline": pipeline, "status": status, "limit": limit}
        params = {key: value for key, value in filters.items() if value is not None}
        return TypeAdapter(list[PipelineRun]).validate_python(self._json("GET", "/v1/pipeline-runs", params=params))

    def get_pipeline_run(self, run_id: str) -> Any:
        from recplane.pipelines import PipelineRun

        return PipelineRun.model_validate(self._json("GET", f"/v1/pipeline-runs/{run_id}"))

    def wait_pipeline_run(self, run_id: str, *, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get_pipeline_run(run_id)
            if run.finished:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Pipeline run {run_id} is still {run.status} after {timeout:g} s.")
            time.sleep(0.25)

    def cancel_pipeline_run(self, run_id: str) -> Any:
        from recplane.pipelines import PipelineRun

        return PipelineRun.model_validate(self._json("POST", f"/v1/pipeline-runs/{run_id}/cancel"))

    def backfill_pipeline(self, name: str, start: Any, end: Any, *, param: str = "date",
                          params: dict[str, Any] | None = None) -> Any:
        from recplane.pipelines import PipelineRun

        body = {"start": str(start), "end": str(end), "param": param, "params": params or {}}
        return TypeAdapter(list[PipelineRun]).validate_python(
            self._json("POST", f"/v1/pipelines/{name}/backfill", json=body)
        )

def _is_pipeline_name(text: str) -> bool:
    """A stored pipeline's name, not a file, YAML text or ``module:attribute`` to apply first."""
    return ":" not in text and not text.endswith((".yaml", ".yml", ".py")) and not Path(text).exists()


def _training_needs_embedded() -> RecplaneError:
    # Training is compute, not a request: until the scheduler runs it as a job, the trainer runs where it is
    # started, reading the same catalog and lake the server uses.
    return InvalidInput(
        "A remote Client cannot start training yet: server-side jobs arrive with the scheduler. Train with an "
        "embedded Client (or `recplane train` without --url) pointed at the same catalog and lake "
        "(RECPLANE_DATABASE_URL, RECPLANE_LAKE_URI); the run is recorded there and visible through the server."
    )


def _features_need_embedded() -> RecplaneError:
    # The feature registry has no REST routes yet, and a training set is compute (a DuckDB join over the lake)
    # that belongs in a scheduler job, like training.
    return InvalidInput(
        "A remote Client cannot register features, build training sets or materialize yet (online lookups "
        "work). Use an embedded Client (or `recplane features ...` without --url) pointed at the same catalog "
        "and lake (RECPLANE_DATABASE_URL, RECPLANE_LAKE_URI)."
    )


def _inline_train_spec(spec: Any) -> Any:
    """A train/tune job names its training spec by a local file: send the file's content (the server cannot read
    the caller's disk)."""
    import yaml

    source = spec.args.get("spec")
    if spec.kind not in ("train", "tune") or not isinstance(source, str) or "\n" in source:
        return spec
    path = Path(source)
    if not path.is_file():
        return spec
    return spec.model_copy(update={"args": {**spec.args, "spec": yaml.safe_load(path.read_text())}})

def _error_of(response: httpx.Response) -> RecplaneError:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return error_from_dict(payload["error"])
    return RecplaneError(f"HTTP {response.status_code} from {response.request.url}: {response.text[:300]}")


def _arrow_chunks(
    data: pa.Table | pa.RecordBatchReader | pd.DataFrame | str | Path,
) -> Iterator[pa.Table]:
    from recplane.ingest import iter_record_batches

    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in iter_record_batches(data):
        pending.append(batch)
        rows += batch.num_rows
        if rows >= _CHUNK_ROWS:
            yield pa.Table.from_batches(pending)
            pending, rows = [], 0
    if pending or rows == 0:
        yield pa.Table.from_batches(pending) if pending else pa.table({})


def _merge_results(results: list[IngestResult], key: str) -> IngestResult:
    if len(results) == 1:
        return results[0]
    versions = [r.version for r in results if r.version is not None]
    rejected_versions = [r.rejected_version for r in results if r.rejected_version is not None]
    return results[-1].model_copy(
        update={
            "batch_id": key,
            "accepted": sum(r.accepted for r in results),
            "rejected": sum(r.rejected for r in results),
            "version": max(versions) if versions else None,
            "rejected_version": max(rejected_versions) if rejected_versions else None,
            "duplicate": all(r.duplicate for r in results),
            "reasons": [reason for r in results for reason in r.reasons][:20],
        }
    )
