"""The recommendation service's HTTP app (``recplane serve``): a lean ASGI app over the micro-batched recommender.

Routes: ``POST /v1/recommend``, ``POST /v1/score``, ``POST /v1/feedback``, ``GET /v1/deployment``,
``POST /v1/admin/reload``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` and ``GET /openapi.json``.

Why not FastAPI: on the 2-core reference box a FastAPI route with a pydantic body answered ≈1.2k requests/s at
p50 0.64 ms / p99 3.2 ms (concurrency 1), this plain ASGI app with the same pydantic model ≈2.3k at 0.43 / 0.81 ms.
The request path here is: read the body, validate it once from bytes (pydantic, Rust), queue it on the
:class:`~recplane.serving.batching.MicroBatcher` (the model runs on its worker thread, never on the event loop),
write the answer with orjson, observe metrics and queue the impression for the background logger. Errors share
the control plane's envelope ``{"error": {"code", "message", "details"}}``; invalid bodies are 422 with one entry
per field, a full service 503 with ``Retry-After``.

Auth is the control plane's: ``Authorization: Bearer <token>`` on ``/v1`` routes, resolved tokens cached for a
few seconds; ``dev_mode`` (``recplane serve --dev``, loopback only) skips it. Health, readiness, metrics and the
OpenAPI document are open.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError

from recplane.auth import TokenCache
from recplane.errors import NotFound, PayloadTooLarge, RecplaneError
from recplane.serving.batching import LoadShed, MicroBatcher
from recplane.serving.http_schema import (
    FeedbackBody,
    RecommendBody,
    ScoreBody,
    field_errors,
    openapi_document,
    valid_request_id,
)
from recplane.serving.impressions import FeedbackEvent, Impression, ImpressionLogger, now_utc
from recplane.serving.metrics import CONTENT_TYPE_LATEST, ServingMetrics, versions_label
from recplane.serving.swap import HotSwapper

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from recplane.runtime import Runtime
    from recplane.serving.recommender import Recommendation, RecommendRequest
    from recplane.serving.spec import DeploymentSpec

__all__ = ["ServingApp", "app_from_environment", "build_serving_app", "log_to_stderr"]

log = logging.getLogger("recplane.serve")

MAX_BODY_BYTES = 4 * 1024 * 1024
_JSON = b"application/json"
_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
Outcome = Any  # a Recommendation, or the RecplaneError that one request of a group raised


@dataclass
class Answer:
    """A handler's response: status, JSON-ready payload (or raw bytes) and the model versions that produced it."""

    payload: Any
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    models: str = ""
    content_type: bytes = _JSON


@dataclass
class Incoming:
    """What a handler sees of a request; a handler sets ``request_id`` when the body names one."""

    body: bytes
    request_id: str
    started: float


Handler = Callable[[Incoming], Awaitable[Answer]]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _bearer(scope: Scope) -> str | None:
    scheme, _, secret = (_header(scope, b"authorization") or "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"The body is over {MAX_BODY_BYTES:,} bytes; send fewer candidates.")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _validated(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as exc:
        raise field_errors(exc) from None


def _error_answer(error: RecplaneError) -> Answer:
    headers = []
    retry_after = getattr(error, "retry_after", 1.0 if error.status == 503 else None)
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    return Answer({"error": error.to_dict()}, status=error.status, headers=headers)


def _fallback_kind(fallback: str) -> str:
    """The fallback's kind for a metric label ("popularity: unknown user" → "popularity")."""
    return fallback.replace("(", ":").split(":", 1)[0].strip() or "unknown"


class ServingApp:
    """The ASGI app of one deployment: routes, lifespan (load, warm up, drain) and metrics."""

    def __init__(
        self, spec: DeploymentSpec, runtime: Runtime, *, dev_mode: bool = False, close_runtime: bool = False
    ) -> None:
        self.spec = spec
        self.runtime = runtime
        self.dev_mode = dev_mode
        self.close_runtime = close_runtime
        self.metrics = ServingMetrics()
        self.swapper = HotSwapper.for_runtime(spec, runtime, self.metrics)
        self.tokens = TokenCache(runtime.catalog)
        self.logger: ImpressionLogger | None = None
        self._recommend: MicroBatcher[RecommendRequest, Outcome] | None = None
        self._score: MicroBatcher[ScoreBody, Outcome] | None = None
        self._openapi = orjson.dumps(openapi_document(spec.name))
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count()
        self._routes: dict[str, dict[str, tuple[Handler, bool]]] = {
            "/v1/recommend": {"POST": (self._handle_recommend, True)},
            "/v1/score": {"POST": (self._handle_score, True)},
            "/v1/feedback": {"POST": (self._handle_feedback, True)},
            "/v1/deployment": {"GET": (self._handle_deployment, True)},
            "/v1/admin/reload": {"POST": (self._handle_reload, True)},
            "/healthz": {"GET": (self._handle_health, False)},
            "/readyz": {"GET": (self._handle_ready, False)},
            "/metrics": {"GET": (self._handle_metrics, False)},
            "/openapi.json": {"GET": (self._handle_openapi, False)},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def start(self) -> None:
        """Start the batchers, the logger and the background load (the app answers /readyz 503 until loaded)."""
        serving = self.spec.serving
        self._recommend = MicroBatcher(
            self._recommend_batch,
            max_batch=serving.max_batch,
            max_wait_ms=serving.max_wait_ms,
            max_inflight=serving.max_inflight,
            on_batch=self.metrics.observe_batch,
            name="recplane-recommend",
        )
        self._score = MicroBatcher(
            self._score_batch,
            max_batch=serving.max_batch,
            max_wait_ms=0.0,
            max_inflight=serving.max_inflight,
            threads=1,
            name="recplane-score",
        )
        self.logger = self._impression_logger()
        self.swapper.start()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until the models serve (True) or ``timeout`` passes (False); for in-process use and tests."""
        return self.swapper.wait_ready(timeout)

    def stop(self) -> None:
        """Answer what is queued, stop following aliases, flush the logs and close the models."""
        for batcher in (self._recommend, self._score):
            if batcher is not None:
                batcher.close()
        self.swapper.close()
        if self.logger is not None:
            self.logger.close()
        if self.close_runtime:
            self.runtime.close()

    def _impression_logger(self) -> ImpressionLogger | None:
        logging_spec = self.spec.logging
        if not logging_spec.impressions:
            return None
        return ImpressionLogger(
            self.runtime.ingestion,
            self.runtime.datasets,
            deployment=self.spec.name,
            impressions=logging_spec.impressions,
            feedback=logging_spec.feedback,
            log_features=logging_spec.log_features,
            metrics=self.metrics,
            flush_seconds=logging_spec.flush_seconds,
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                asyncio.get_running_loop().create_task(self._announce_ready())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _announce_ready(self) -> None:
        started = time.perf_counter()
        while not self.swapper.ready:
            await asyncio.sleep(0.05)
        log.info(
            "Deployment %s ready in %.1fs: %s",
            self.spec.name,
            time.perf_counter() - started,
            versions_label(self.swapper.model_versions),
        )

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path = scope["path"]
        given = _header(scope, b"x-request-id")
        request_id = given if given is not None and valid_request_id(given) else self._new_request_id()
        incoming = Incoming(b"", request_id, started)
        answer = await self._dispatch(scope, receive, path, incoming)
        body = answer.payload if isinstance(answer.payload, bytes) else orjson.dumps(answer.payload, option=_ORJSON)
        headers = [
            (b"content-type", answer.content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", incoming.request_id.encode()),
            *answer.headers,
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        route = path if path in self._routes else "unmatched"
        self.metrics.observe_request(route, answer.status, answer.models, time.perf_counter() - started)

    def _new_request_id(self) -> str:
        """32 hex digits: a random per-process prefix and a counter (a uuid4 costs a syscall per request)."""
        return f"{self._id_prefix}{next(self._id_counter):016x}"

    async def _dispatch(self, scope: Scope, receive: Receive, path: str, incoming: Incoming) -> Answer:
        methods = self._routes.get(path)
        try:
            if methods is None:
                raise NotFound(f"No route {path}. Routes: {', '.join(sorted(self._routes))}.")
            entry = methods.get(scope["method"])
            if entry is None:
                return _error_answer(_MethodNotAllowed(f"{path} takes {', '.join(methods)}, not {scope['method']}."))
            handler, needs_auth = entry
            if needs_auth and not self.dev_mode:
                self.tokens.resolve(_bearer(scope))
            incoming.body = await _read_body(receive)
            return await handler(incoming)
        except RecplaneError as exc:
            if isinstance(exc, LoadShed):
                self.metrics.shed.inc()
            self.metrics.errors.labels(path if methods else "unmatched", exc.code).inc()
            return _error_answer(exc)
        except Exception as exc:
            log.exception("Request %s to %s failed", incoming.request_id, path)
            self.metrics.errors.labels(path, "internal").inc()
            return _error_answer(
                RecplaneError(f"Internal error ({type(exc).__name__}); request id {incoming.request_id}.")
            )

    def _recommend_batch(self, requests: Sequence[RecommendRequest]) -> list[Outcome]:
        with self.swapper.lease() as recommender:
            try:
                return list(recommender.recommend_batch(requests))
            except RecplaneError as exc:
                if len(requests) == 1 or exc.status >= 500:
                    raise

            def one(request: RecommendRequest) -> Recommendation:
                return recommender.recommend_batch([request])[0]

            # One bad request must not fail its neighbours: answer the group one by one.
            return [_outcome(one, request) for request in requests]

    def _score_batch(self, requests: Sequence[ScoreBody]) -> list[Outcome]:
        with self.swapper.lease() as recommender:
            return [_outcome(recommender.score, r.user_id, r.item_ids, r.context) for r in requests]

    def _require_ready(self) -> None:
        if not self.swapper.ready:
            raise self.swapper.not_ready()

    async def _handle_recommend(self, incoming: Incoming) -> Answer:
        from recplane.serving.recommender import RecommendRequest

        body: RecommendBody = _validated(RecommendBody, incoming.body)
        if body.request_id is not None:
            incoming.request_id = body.request_id
        self._require_ready()
        request = RecommendRequest(
            user_id=body.user_id, k=body.k or self.spec.k, context=body.context, exclude=body.exclude
        )
        assert self._recommend is not None
        outcome, waited = await self._recommend.submit_timed(request)
        return self._answer("recommend", incoming, body, outcome, waited)

    async def _handle_score(self, incoming: Incoming) -> Answer:
        body: ScoreBody = _validated(ScoreBody, incoming.body)
        if body.request_id is not None:
            incoming.request_id = body.request_id
        self._require_ready()
        assert self._score is not None
        outcome, waited = await self._score.submit_timed(body)
        return self._answer("score", incoming, body, outcome, waited)

    def _answer(
        self, route: str, incoming: Incoming, body: RecommendBody | ScoreBody, outcome: Outcome, waited_s: float
    ) -> Answer:
        if isinstance(outcome, BaseException):
            raise outcome
        result: Recommendation = outcome
        models = versions_label(result.model_versions)
        stages = {**result.stage_ms, "queue": waited_s * 1000}
        self.metrics.observe_stages(stages, models)
        if result.fallback:
            self.metrics.fallbacks.labels(_fallback_kind(result.fallback)).inc()
        item_ids = [item.item_id for item in result.items]
        scores = [float(item.score) for item in result.items]
        if self.logger is not None:
            self.logger.log(
                Impression(
                    incoming.request_id,
                    now_utc(),
                    route,
                    body.user_id,
                    item_ids,
                    scores,
                    result.model_versions,
                    result.rules,
                    result.fallback,
                    body.context,
                    result.features,
                )
            )
        payload = {
            "request_id": incoming.request_id,
            "items": [{"item_id": item_id, "score": score} for item_id, score in zip(item_ids, scores, strict=True)],
            "model_versions": result.model_versions,
            "rules": result.rules,
            "fallback": result.fallback,
            "timings_ms": {
                **{stage: round(ms, 3) for stage, ms in stages.items()},
                "total": round((time.perf_counter() - incoming.started) * 1000, 3),
            },
        }
        return Answer(payload, models=models)

    async def _handle_feedback(self, incoming: Incoming) -> Answer:
        body: FeedbackBody = _validated(FeedbackBody, incoming.body)
        if self.logger is None:
            raise NotFound(
                f"Deployment {self.spec.name!r} logs no impressions (logging.impressions is not set), "
                "so there is nothing for feedback to join."
            )
        self.logger.feedback(
            FeedbackEvent(body.request_id, body.item_id, body.event, body.value, body.user_id, body.ts or now_utc())
        )
        return Answer({"accepted": True, "dataset": self.logger.feedback_dataset}, status=202)

    async def _handle_deployment(self, incoming: Incoming) -> Answer:
        return Answer(
            {
                "deployment": self.spec.model_dump(mode="json"),
                "ready": self.swapper.ready,
                **self.swapper.describe(),
                "inflight": self._recommend.inflight if self._recommend else 0,
                "pid": os.getpid(),
            }
        )

    async def _handle_reload(self, incoming: Incoming) -> Answer:
        versions = await asyncio.to_thread(self.swapper.reload)
        return Answer({"model_versions": versions}, models=versions_label(versions))

    async def _handle_health(self, incoming: Incoming) -> Answer:
        return Answer({"status": "ok"})

    async def _handle_ready(self, incoming: Incoming) -> Answer:
        if not self.swapper.ready:
            return Answer(
                {"ready": False, "last_error": self.swapper.last_error}, status=503, headers=[(b"retry-after", b"1")]
            )
        return Answer({"ready": True, "model_versions": self.swapper.model_versions})

    async def _handle_metrics(self, incoming: Incoming) -> Answer:
        self.metrics.inflight.set(self._recommend.inflight if self._recommend else 0)
        return Answer(self.metrics.render(), content_type=CONTENT_TYPE_LATEST.encode())

    async def _handle_openapi(self, incoming: Incoming) -> Answer:
        return Answer(self._openapi)


class _MethodNotAllowed(RecplaneError):
    code = "method_not_allowed"
    status = 405


def _outcome(call: Callable[..., Any], *args: Any) -> Outcome:
    try:
        return call(*args)
    except RecplaneError as exc:  # answered to this request only
        return exc


def build_serving_app(spec: DeploymentSpec, runtime: Runtime, *, dev_mode: bool = False) -> ServingApp:
    """The ASGI app serving ``spec`` from ``runtime``'s registry (the caller closes the runtime)."""
    return ServingApp(spec, runtime, dev_mode=dev_mode)


def log_to_stderr(level: str) -> None:
    """Show recplane's own log lines (ready, swaps, load failures) on stderr next to uvicorn's."""
    logger = logging.getLogger("recplane")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())


DEPLOYMENT_ENV = "RECPLANE_SERVE_DEPLOYMENT"
DEV_ENV = "RECPLANE_SERVE_DEV"


def app_from_environment() -> ServingApp:
    """The app of one ``recplane serve --workers N`` worker process: its own runtime, spec from the environment."""
    from recplane.runtime import Runtime
    from recplane.serving.spec import load_deployment

    text = os.environ.get(DEPLOYMENT_ENV)
    if not text:
        raise RuntimeError(f"{DEPLOYMENT_ENV} is not set: start workers with `recplane serve DEPLOYMENT.yaml`.")
    spec = load_deployment(orjson.loads(text))
    runtime = Runtime()
    log_to_stderr(runtime.settings.log_level)
    return ServingApp(spec, runtime, dev_mode=os.environ.get(DEV_ENV) == "1", close_runtime=True)
