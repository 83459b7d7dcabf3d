"""REST routes for datasets: register, evolve, list, read (Arrow IPC or JSON), replace, history, stats, maintenance."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import orjson
import pyarrow as pa
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from recplane.api.bodies import read_limited
from recplane.api.deps import Caller, RuntimeDep
from recplane.errors import InvalidInput
from recplane.lake import DatasetInfo, DatasetSpec, DatasetStats, DatasetVersion, MaintenanceResult
from recplane.lake.info import SchemaChangeResult
from recplane.wire import ARROW_STREAM, table_from_ipc, table_to_ipc

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_REPLACE_BODY = {
    "content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    "required": True,
    "description": "The dataset's whole new content as one Arrow IPC stream (an empty table clears it).",
}


class DatasetReplaced(BaseModel):
    """The answer to a replace: the version that holds the new content."""

    version: int = Field(description="The new version; older versions stay readable by time travel.")


@router.get("", response_model=list[DatasetInfo], summary="List the datasets your team may see")
def list_datasets(runtime: RuntimeDep, caller: Caller) -> list[DatasetInfo]:
    return runtime.datasets.list(principal=caller)


@router.post("", response_model=DatasetInfo, status_code=201, summary="Register a dataset from its spec")
def create_dataset(spec: DatasetSpec, runtime: RuntimeDep, caller: Caller) -> DatasetInfo:
    return runtime.datasets.create(spec, principal=caller)


@router.put("/{name}", response_model=SchemaChangeResult, summary="Create or evolve a dataset to this spec")
def apply_dataset(name: str, spec: DatasetSpec, runtime: RuntimeDep, caller: Caller) -> SchemaChangeResult:
    if spec.name != name:
        raise InvalidInput(f"The URL names dataset {name!r} but the spec names {spec.name!r}.")
    return runtime.datasets.apply(spec, principal=caller)


@router.get("/{name}", response_model=DatasetInfo, summary="One dataset")
def get_dataset(name: str, runtime: RuntimeDep, caller: Caller) -> DatasetInfo:
    return runtime.datasets.get(name, principal=caller)


@router.get("/{name}/history", response_model=list[DatasetVersion], summary="Versions, newest first")
def history(name: str, runtime: RuntimeDep, caller: Caller) -> list[DatasetVersion]:
    return runtime.datasets.history(name, principal=caller)


@router.get("/{name}/stats", response_model=DatasetStats, summary="Rows, bytes, files, column statistics")
def stats(name: str, runtime: RuntimeDep, caller: Caller, version: int | None = None) -> DatasetStats:
    return runtime.datasets.stats(name, principal=caller, version=version)


@router.get(
    "/{name}/rows",
    summary="Read rows (time travel with version or as_of)",
    responses={200: {"content": {ARROW_STREAM: {}, "application/json": {}}}},
)
async def read_rows(
    name: str,
    runtime: RuntimeDep,
    caller: Caller,
    version: int | None = None,
    as_of: datetime | None = None,
    columns: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=0)] = None,
    format: Annotated[str, Query(pattern="^(arrow|json)$")] = "arrow",
) -> Response:
    """Rows as an Arrow IPC stream (default) or a JSON array (``format=json``)."""
    table = await run_in_threadpool(
        runtime.datasets.read, name, principal=caller, version=version, as_of=as_of, columns=columns
    )
    if limit is not None:
        table = table.slice(0, limit)
    if format == "json":
        body = orjson.dumps(table.to_pylist(), option=orjson.OPT_PASSTHROUGH_DATETIME, default=str)
        return Response(body, media_type="application/json")
    return Response(table_to_ipc(table), media_type=ARROW_STREAM)


@router.put(
    "/{name}/rows",
    response_model=DatasetReplaced,
    summary="Replace the whole content as one new version (all or nothing)",
    openapi_extra={"requestBody": _REPLACE_BODY},
    responses={
        403: {"description": "The dataset belongs to another team"},
        413: {"description": "Body over max_request_bytes"},
        422: {"description": "An invalid row or a repeated dedup key: nothing was written"},
    },
)
async def replace_rows(
    name: str,
    request: Request,
    runtime: RuntimeDep,
    caller: Caller,
    commit_metadata: Annotated[
        str | None, Header(max_length=8192, description="A JSON object recorded with the new version.")
    ] = None,
) -> DatasetReplaced:
    """Validate every row (as ingestion does); any invalid row or repeated dedup key refuses the whole body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != ARROW_STREAM:
        raise InvalidInput(f"Send the new content as an Arrow IPC stream (Content-Type: {ARROW_STREAM}).")
    metadata = _metadata(commit_metadata)
    # A replace is one body: it cannot be split like ingestion batches.
    advice = "Replace from an embedded client, or raise the server's max_request_bytes."
    body = await read_limited(request, runtime.settings.max_request_bytes, advice=advice)
    table = await run_in_threadpool(_table_of, body)
    version = await run_in_threadpool(runtime.datasets.replace, name, table, principal=caller, metadata=metadata)
    return DatasetReplaced(version=version)


def _metadata(header: str | None) -> dict[str, Any] | None:
    if header is None:
        return None
    try:
        metadata = json.loads(header)
    except ValueError as exc:
        raise InvalidInput(f"The Commit-Metadata header is not JSON: {exc}.") from exc
    if not isinstance(metadata, dict):
        raise InvalidInput("The Commit-Metadata header must be a JSON object.")
    return metadata


def _table_of(body: bytes) -> pa.Table:
    try:
        return table_from_ipc(body)
    except pa.ArrowException as exc:
        raise InvalidInput(f"The body is not an Arrow IPC stream: {exc}.") from exc


@router.post("/{name}/compact", response_model=MaintenanceResult, summary="Compact small files")
def compact(name: str, runtime: RuntimeDep, caller: Caller) -> MaintenanceResult:
    return runtime.datasets.compact(name, principal=caller)


@router.post("/{name}/retention", response_model=MaintenanceResult, summary="Apply the retention policy")
def enforce_retention(name: str, runtime: RuntimeDep, caller: Caller) -> MaintenanceResult:
    return runtime.datasets.enforce_retention(name, principal=caller)
