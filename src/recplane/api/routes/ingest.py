"""The ingestion endpoint: JSON array, NDJSON or Arrow IPC in; acknowledged only after commit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool

from recplane.api.bodies import read_limited
from recplane.api.deps import Caller, RuntimeDep
from recplane.ingest import IngestResult
from recplane.wire import ARROW_STREAM, table_from_ipc

router = APIRouter(prefix="/v1/datasets", tags=["ingestion"])

_BODY_DOC = {
    "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
    },
    "required": True,
}


@router.post(
    "/{name}/events",
    response_model=IngestResult,
    summary="Ingest rows (acknowledged after commit)",
    openapi_extra={"requestBody": _BODY_DOC},
    responses={
        413: {"description": "Body over max_request_bytes"},
        429: {"description": "Ingestion queue full; retry after Retry-After seconds"},
    },
)
async def ingest_events(
    name: str,
    request: Request,
    runtime: RuntimeDep,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> Response:
    """Validate rows against the dataset's schema; valid rows are committed, invalid ones dead-lettered."""
    metrics = request.app.state.metrics
    body = await read_limited(request, runtime.settings.max_request_bytes, advice="Split it into batches.")
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    try:
        if content_type == ARROW_STREAM:
            table = await run_in_threadpool(table_from_ipc, body)
            result = await runtime.ingestion.ingest_async(
                name, table, principal=caller, batch_id=idempotency_key, source="http"
            )
        else:
            result = await runtime.ingestion.ingest_async(
                name, body, principal=caller, batch_id=idempotency_key, source="http"
            )
    except Exception as exc:
        metrics.ingest_requests.labels(name, type(exc).__name__).inc()
        raise
    metrics.ingest_requests.labels(name, "duplicate" if result.duplicate else "ok").inc()
    if not result.duplicate:
        metrics.ingested_rows.labels(name, "accepted").inc(result.accepted)
        metrics.ingested_rows.labels(name, "rejected").inc(result.rejected)
    # Serialised here: the model is valid already, and FastAPI would validate it again on the hot path.
    return Response(result.model_dump_json(), media_type="application/json")
