"""The ingestion endpoint: JSON array, NDJSON or Arrow IPC in; acknowledged only after commit.

``recplane server`` answers this route on a lean path (:mod:`recplane.api.fast_ingest`) before FastAPI's routing;
the route declared here documents it in ``/openapi.json`` and answers wherever the app is called through FastAPI's
stack. Both paths share :func:`ingest_body`, so they commit, count and answer alike.
"""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool

from recplane.api.bodies import read_limited
from recplane.api.deps import Caller, RuntimeDep
from recplane.api.metrics import ServerMetrics
from recplane.auth import Principal
from recplane.errors import InvalidInput
from recplane.ingest import IngestResult
from recplane.runtime import Runtime
from recplane.wire import ARROW_STREAM, table_from_ipc

__all__ = ["MAX_IDEMPOTENCY_KEY", "ingest_body", "router"]

router = APIRouter(prefix="/v1/datasets", tags=["ingestion"])

MAX_IDEMPOTENCY_KEY = 256

_BODY_DOC = {
    "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
    },
    "required": True,
}


def _arrow_table(body: bytes) -> pa.Table:
    try:
        return table_from_ipc(body)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInput(
            f"The body is not an Arrow IPC stream ({exc}); send one with Content-Type {ARROW_STREAM}, or send "
            "JSON rows as application/json or application/x-ndjson."
        ) from exc


async def ingest_body(
    runtime: Runtime,
    metrics: ServerMetrics,
    name: str,
    body: bytes,
    *,
    content_type: str,
    caller: Principal,
    idempotency_key: str | None,
) -> bytes:
    """Ingest one request body into dataset ``name`` and count it; the JSON of its :class:`IngestResult`."""
    try:
        data: bytes | pa.Table = body
        if content_type.split(";")[0].strip() == ARROW_STREAM:
            data = await run_in_threadpool(_arrow_table, body)
        result = await runtime.ingestion.ingest_async(
            name, data, principal=caller, batch_id=idempotency_key, source="http"
        )
    except Exception as exc:
        metrics.ingest_requests.labels(name, type(exc).__name__).inc()
        raise
    metrics.ingest_requests.labels(name, "duplicate" if result.duplicate else "ok").inc()
    if not result.duplicate:
        metrics.ingested_rows.labels(name, "accepted").inc(result.accepted)
        metrics.ingested_rows.labels(name, "rejected").inc(result.rejected)
    # Serialised here: the model is valid already, and FastAPI would validate it again on the hot path.
    return result.model_dump_json().encode()


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
    idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY)] = None,
) -> Response:
    """Validate rows against the dataset's schema; valid rows are committed, invalid ones dead-lettered."""
    body = await read_limited(request, runtime.settings.max_request_bytes, advice="Split it into batches.")
    answer = await ingest_body(
        runtime,
        request.app.state.metrics,
        name,
        body,
        content_type=request.headers.get("content-type", ""),
        caller=caller,
        idempotency_key=idempotency_key,
    )
    return Response(answer, media_type="application/json")
