"""REST routes for datasets: register, evolve, list, read (Arrow IPC or JSON), history, stats, maintenance."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from recplane.api.deps import Caller, RuntimeDep
from recplane.lake import DatasetInfo, DatasetSpec, DatasetStats, DatasetVersion, MaintenanceResult
from recplane.lake.info import SchemaChangeResult
from recplane.wire import ARROW_STREAM, table_to_ipc

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.get("", response_model=list[DatasetInfo], summary="List the datasets your team may see")
def list_datasets(runtime: RuntimeDep, caller: Caller) -> list[DatasetInfo]:
    return runtime.datasets.list(principal=caller)


@router.post("", response_model=DatasetInfo, status_code=201, summary="Register a dataset from its spec")
def create_dataset(spec: DatasetSpec, runtime: RuntimeDep, caller: Caller) -> DatasetInfo:
    return runtime.datasets.create(spec, principal=caller)


@router.put("/{name}", response_model=SchemaChangeResult, summary="Create or evolve a dataset to this spec")
def apply_dataset(name: str, spec: DatasetSpec, runtime: RuntimeDep, caller: Caller) -> SchemaChangeResult:
    from recplane.errors import InvalidInput

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


@router.post("/{name}/compact", response_model=MaintenanceResult, summary="Compact small files")
def compact(name: str, runtime: RuntimeDep, caller: Caller) -> MaintenanceResult:
    return runtime.datasets.compact(name, principal=caller)


@router.post("/{name}/retention", response_model=MaintenanceResult, summary="Apply the retention policy")
def enforce_retention(name: str, runtime: RuntimeDep, caller: Caller) -> MaintenanceResult:
    return runtime.datasets.enforce_retention(name, principal=caller)
