"""The recommendation service's HTTP bodies (pydantic) and the OpenAPI document built from them.

Request bodies are validated once, straight from the raw bytes (``model_validate_json``, pydantic's Rust path);
a failure becomes a 422 with one entry per offending field. Responses are written with orjson from plain dicts;
their models here exist for the OpenAPI document and for clients that want types.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema

from recplane import __version__
from recplane.errors import InvalidInput

__all__ = [
    "FeedbackBody",
    "RecommendBody",
    "RecommendResponse",
    "ScoreBody",
    "field_errors",
    "openapi_document",
    "valid_request_id",
]

Id = str | int
MAX_K = 1000
MAX_CANDIDATES = 10_000
MAX_REQUEST_ID = 128
# Visible ASCII only: the id is echoed in the X-Request-Id header, where spaces at the ends and control characters
# would not survive, and it is what impressions and feedback join on.
REQUEST_ID_PATTERN = r"^[!-~]+$"
_REQUEST_ID = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID}}}")


def valid_request_id(text: str) -> bool:
    """Whether ``text`` may serve as a request id (what a body's ``request_id`` must be; the X-Request-Id header is
    used only when it is one)."""
    return _REQUEST_ID.fullmatch(text) is not None


def _request_id_field() -> Any:
    return Field(
        None,
        min_length=1,
        max_length=MAX_REQUEST_ID,
        pattern=REQUEST_ID_PATTERN,
        description="Your id for this request (1-128 visible ASCII characters): echoed in the response and the "
        "X-Request-Id header and logged with the impression, so feedback joins on it. Default: the X-Request-Id "
        "header, else one the server makes.",
    )


class RecommendBody(BaseModel):
    """``POST /v1/recommend``: the top ``k`` items for a user."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id = Field(description="The user, as in the training data (text or integer).")
    k: int | None = Field(None, ge=1, le=MAX_K, description="How many items (default: the deployment's k).")
    context: dict[str, Any] = Field(default_factory=dict, description="Request context (device, page, time ...).")
    exclude: list[Id] = Field(
        default_factory=list,
        max_length=MAX_CANDIDATES,
        description="Items never to return (already seen, in the basket ...).",
    )
    request_id: str | None = _request_id_field()


class ScoreBody(BaseModel):
    """``POST /v1/score``: rank the given candidate items for a user."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_CANDIDATES, description="The candidates to rank.")
    context: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = _request_id_field()


class FeedbackBody(BaseModel):
    """``POST /v1/feedback``: what the user did with a recommended item; joins the impression on request_id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128, description="The request_id of the recommendation.")
    item_id: Id
    event: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="click, rating, purchase, dismiss ...")
    value: float | None = Field(None, description="The event's value: the rating, a dwell time ...")
    user_id: Id | None = None
    ts: datetime | None = Field(None, description="When it happened (default: when it was received).")


class ScoredItem(BaseModel):
    """One recommended item."""

    item_id: Id
    score: float


class RecommendResponse(BaseModel):
    """The answer of ``/v1/recommend`` and ``/v1/score``."""

    request_id: str = Field(description="Quote it in /v1/feedback; also in the X-Request-Id header.")
    items: list[ScoredItem]
    model_versions: dict[str, str] = Field(description='Role to model:version, e.g. {"retrieval": "mf:3"}.')
    rules: list[str] = Field(description="Business rules applied.")
    fallback: str | None = Field(description="Set when a fallback answered (unknown or cold user) and why.")
    timings_ms: dict[str, float] = Field(
        description="Milliseconds per stage of the micro-batch that answered (features, retrieval, ranking, rules), "
        "the time this request waited in the micro-batch queue (queue) and the whole request (total)."
    )


class FieldError(BaseModel):
    """One invalid field of a request body."""

    field: str
    message: str


class ErrorDetail(BaseModel):
    """The error envelope's content."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message", "details"}}`` (422s list ``details.fields``)."""

    error: ErrorDetail


def field_errors(exc: ValidationError) -> InvalidInput:
    """A 422 error naming each invalid field of a request body."""
    fields = [
        {"field": ".".join(str(part) for part in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_url=False)
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return InvalidInput(f"Invalid request: {summary}", details={"fields": fields})


def _operation(summary: str, body: str | None, answer: str | None, codes: tuple[int, ...]) -> dict[str, Any]:
    ref = "#/components/schemas/{}"
    operation: dict[str, Any] = {"summary": summary, "responses": {}}
    if body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": ref.format(body)}}},
        }
    ok: dict[str, Any] = {"description": "OK"}
    if answer:
        ok["content"] = {"application/json": {"schema": {"$ref": ref.format(answer)}}}
    operation["responses"]["200"] = ok
    for code in codes:
        operation["responses"][str(code)] = {
            "description": {
                401: "No or invalid token",
                404: "Unknown user or item",
                422: "Invalid body (fields)",
                503: "Overloaded or not ready (Retry-After)",
            }.get(code, "Error"),
            "content": {"application/json": {"schema": {"$ref": ref.format("ErrorBody")}}},
        }
    return operation


def openapi_document(deployment: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the recommendation service."""
    models: list[type[BaseModel]] = [RecommendBody, ScoreBody, FeedbackBody, RecommendResponse, ErrorBody]
    _, schemas = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    errors = (401, 422, 503)
    paths = {
        "/v1/recommend": {"post": _operation("Top-k items for a user", "RecommendBody", "RecommendResponse", errors)},
        "/v1/score": {"post": _operation("Rank given candidates for a user", "ScoreBody", "RecommendResponse", errors)},
        "/v1/feedback": {"post": _operation("Log a click, rating ... on a served item", "FeedbackBody", None, errors)},
        "/v1/deployment": {"get": _operation("The deployment spec and the model versions serving", None, None, (401,))},
        "/v1/admin/reload": {"post": _operation("Resolve aliases and load the models again", None, None, (401, 503))},
        "/healthz": {"get": _operation("Liveness", None, None, ())},
        "/readyz": {"get": _operation("Readiness: models loaded and warmed up", None, None, (503,))},
        "/metrics": {"get": _operation("Prometheus metrics", None, None, ())},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"recplane serve: {deployment}", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
