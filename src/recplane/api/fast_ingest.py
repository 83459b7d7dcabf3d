"""The lean path of ``POST /v1/datasets/{name}/events``: the ingestion route answered before FastAPI's stack.

Why: at a few hundred ingestion requests a second on a 2-core machine, FastAPI's middlewares, routing over every
route and dependency solving took about three quarters of the server's Python time, more than validating and
committing the rows. This path recognises exactly this method and route and does what the FastAPI route does,
in the same order and with the same outcomes:

1. the caller: ``Authorization: Bearer <token>`` through the app's :class:`~recplane.auth.TokenCache` (any caller
   is the administrator in dev mode) — 401;
2. ``Idempotency-Key`` of at most 256 characters — 422 with FastAPI's field error;
3. the body, refused as soon as it passes ``max_request_bytes`` — 413;
4. :func:`~recplane.api.routes.ingest.ingest_body`, the route's own code: JSON, NDJSON or Arrow IPC by
   Content-Type, then ingestion (404, 403, 422, 429 with Retry-After, 503) and the ingestion counters.

Errors use :func:`~recplane.api.errors.error_response` (the app's envelope), and the request counter and latency
histogram are the ones :class:`~recplane.api.metrics.MetricsMiddleware` keeps, under the route's template. Anything
else — other routes and methods, a trailing slash, websockets, lifespan — goes to FastAPI unchanged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse

from recplane.api.errors import error_response
from recplane.api.routes.ingest import MAX_IDEMPOTENCY_KEY, ingest_body
from recplane.auth import ADMIN, Principal, TokenCache
from recplane.errors import InvalidInput, PayloadTooLarge, RecplaneError

if TYPE_CHECKING:
    from starlette.datastructures import State
    from starlette.types import Receive, Scope, Send

__all__ = ["ROUTE", "IngestFastPath", "ingest_route_name"]

ROUTE = "/v1/datasets/{name}/events"
_PREFIX, _SUFFIX = "/v1/datasets/", "/events"
_ADVICE = "Split it into batches."
_WANTED = frozenset({b"authorization", b"content-type", b"content-length", b"idempotency-key"})
_JSON_HEADERS = [(b"content-type", b"application/json")]


def ingest_route_name(scope: Scope) -> str | None:
    """The dataset name when ``scope`` is ``POST /v1/datasets/{name}/events`` (as FastAPI would match it), else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    name = path[len(_PREFIX):-len(_SUFFIX)]
    return name if name and "/" not in name else None


def _headers(scope: Scope) -> dict[bytes, str]:
    """The headers this route reads, first value of each (as Starlette's ``Headers.get``), latin-1 decoded."""
    found: dict[bytes, str] = {}
    for key, value in scope["headers"]:
        if key in _WANTED and key not in found:
            found[key] = value.decode("latin-1")
    return found


def _caller(state: State, authorization: str) -> Principal:
    """As :func:`recplane.api.security.current_principal`."""
    if state.dev_mode:
        return ADMIN
    scheme, _, secret = authorization.partition(" ")
    token = secret.strip() if scheme.lower() == "bearer" else None
    tokens: TokenCache = state.tokens
    return tokens.resolve(token)


def _check_idempotency_key(key: str | None) -> None:
    """FastAPI's answer to ``Header(max_length=256)``, as the app's validation handler words it."""
    if key is None or len(key) <= MAX_IDEMPOTENCY_KEY:
        return
    field = "header.idempotency-key"
    message = f"String should have at most {MAX_IDEMPOTENCY_KEY} characters"
    fields = [{"field": field, "message": message}]
    raise InvalidInput(f"Invalid request: {field}: {message}", details={"fields": fields})


async def _read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """As :func:`recplane.api.bodies.read_limited`: 413 as soon as the body passes ``limit``."""
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {limit}. {_ADVICE}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is over the {limit}-byte limit. {_ADVICE}")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class IngestFastPath:
    """Answers the ingestion route for one app (its ``state``: runtime, tokens, dev_mode, metrics)."""

    def __init__(self, state: State) -> None:
        self.state = state

    async def __call__(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ingestion request for dataset ``name``; counted and timed as MetricsMiddleware does."""
        started = time.perf_counter()
        status = 500
        try:
            status = await self._answer(name, scope, receive, send)
        finally:
            metrics = self.state.metrics
            metrics.latency.labels(ROUTE, "POST").observe(time.perf_counter() - started)
            metrics.requests.labels(ROUTE, "POST", str(status)).inc()

    async def _answer(self, name: str, scope: Scope, receive: Receive, send: Send) -> int:
        try:
            answer = await self._ingest(name, scope, receive)
        except RecplaneError as exc:
            response = error_response(exc)
            await response(scope, receive, send)
            return response.status_code
        except Exception:
            # As Starlette's ServerErrorMiddleware: a plain 500 (nothing was sent yet), and the server logs it.
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        length = (b"content-length", str(len(answer)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [length, *_JSON_HEADERS]})
        await send({"type": "http.response.body", "body": answer})
        return 200

    async def _ingest(self, name: str, scope: Scope, receive: Receive) -> bytes:
        state = self.state
        headers = _headers(scope)
        caller = _caller(state, headers.get(b"authorization", ""))
        key = headers.get(b"idempotency-key")
        _check_idempotency_key(key)
        runtime = state.runtime
        body = await _read_body(receive, headers.get(b"content-length"), runtime.settings.max_request_bytes)
        return await ingest_body(
            runtime,
            state.metrics,
            name,
            body,
            content_type=headers.get(b"content-type", ""),
            caller=caller,
            idempotency_key=key,
        )
