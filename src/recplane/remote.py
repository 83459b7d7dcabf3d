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

    def online_features(self, entities: Any, features: Any, *, now: datetime | None = None) -> Any:
        from recplane.features.serving import OnlineFeatures

        body: dict[str, Any] = {
            "entities": entities if isinstance(entities, dict) else list(entities),
            "features": features if isinstance(features, str) else list(features),
            "now": now.isoformat() if now is not None else None,
        }
        payload = self._json(
            "POST",
            "/v1/features/online",
            content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=str),
            headers={"Content-Type": "application/json"},
        )
        return OnlineFeatures.from_dict(payload)


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
