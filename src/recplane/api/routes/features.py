"""REST routes for features: online lookups (``POST /v1/features/online``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from recplane.api.deps import Caller, RuntimeDep

router = APIRouter(prefix="/v1/features", tags=["features"])


class OnlineRequest(BaseModel):
    """Which entities and which features to look up."""

    entities: dict[str, list[Any]] | list[dict[str, Any]] = Field(
        description='Join key values as columns ({"user_id": [1, 2]}) or rows ([{"user_id": 1}]).'
    )
    features: str | list[str] = Field(description="A feature service name, or ['view:feature', 'view:*', ...].")
    now: datetime | None = Field(None, description="Evaluate TTLs as of this time (default: the server's now).")


class OnlineAnswer(BaseModel):
    """Values per feature aligned with the entities, freshness and status per online view, overall status."""

    entities: list[dict[str, Any]]
    features: list[str]
    values: dict[str, list[Any]]
    statuses: list[str] = Field(description="Per entity: ok, expired (older than the view's TTL) or missing.")
    view_statuses: dict[str, list[str]]
    event_times: dict[str, list[datetime | None]] = Field(
        description="Per online view (view, view.aggregates): the event time of each entity's values."
    )


@router.post(
    "/online",
    response_model=OnlineAnswer,
    summary="Look up online feature values of some entities",
    responses={
        403: {"description": "A view's source dataset belongs to another team"},
        404: {"description": "A view was never materialized"},
        422: {"description": "An unknown feature, view or service (named in the error), or a missing join key"},
    },
)
async def online_features(request: OnlineRequest, runtime: RuntimeDep, caller: Caller) -> Response:
    """Values come from the online store; an unknown entity is ``missing`` (nulls), not an error."""
    found = await run_in_threadpool(
        runtime.online_features.online_features,
        request.entities,
        request.features,
        principal=caller,
        now=request.now,
    )
    body = orjson.dumps(found.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY, default=str)
    return Response(body, media_type="application/json")
