"""REST routes for features: online lookups (``POST /v1/features/online``), skew reports (``POST .../skew``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from recplane.api.deps import Caller, RuntimeDep
from recplane.features.skew import SkewReport, parse_since

router = APIRouter(prefix="/v1/features", tags=["features"])


class OnlineRequest(BaseModel):
    """Which entities and which features to look up."""

    entities: dict[str, list[Any]] | list[dict[str, Any]] = Field(
        description='Join key values as columns ({"user_id": [1, 2]}) or rows ([{"user_id": 1}]).'
    )
    features: str | list[str] = Field(description="A feature service name, or ['view:feature', 'view:*', ...].")
    now: datetime | None = Field(None, description="Evaluate TTLs as of this time (default: the server's now).")
    log: bool | None = Field(
        None, description="Append the answer to the served-feature log (default: the log_served_features setting)."
    )
    log_dataset: str | None = Field(None, description="The served-feature log (default: feature_log_dataset).")


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
    request_id: str | None = Field(None, description="The id the answer was logged under (null when not logged).")


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
        log=request.log,
        log_dataset=request.log_dataset,
    )
    body = orjson.dumps(found.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY, default=str)
    return Response(body, media_type="application/json")


class SkewRequest(BaseModel):
    """Which window of the served-feature log to compare with the offline engine."""

    since: str = Field(description="A period back from now (30m, 6h, 1d, 7d) or an ISO 8601 time.", examples=["1d"])
    features: str | list[str] | None = Field(
        None, description="Only these: a feature service, or ['view:feature', 'view:*'] (default: all logged)."
    )
    dataset: str | None = Field(None, description="The served-feature log (default: feature_log_dataset).")


@router.post(
    "/skew",
    response_model=SkewReport,
    summary="Train-serve skew: logged online values against the offline engine's",
    responses={
        403: {"description": "The log or a view's source dataset belongs to another team"},
        404: {"description": "Nothing was ever logged to the served-feature log"},
        422: {"description": "A bad since (not a period or ISO time) or an unknown feature service"},
    },
)
async def feature_skew(body: SkewRequest, request: Request, runtime: RuntimeDep, caller: Caller) -> SkewReport:
    """Each logged value is recomputed as of its serving time; per feature: mismatch rate, differences, examples.
    The per-feature results are also exported as Prometheus gauges on ``/metrics``."""
    report = await run_in_threadpool(
        runtime.feature_skew.report,
        parse_since(body.since),
        principal=caller,
        features=body.features,
        dataset=body.dataset,
    )
    request.app.state.metrics.record_feature_skew(report)
    return report
