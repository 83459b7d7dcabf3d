"""The control-plane HTTP application: REST under /v1, OpenAPI, health, Prometheus metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from recplane import __version__
from recplane.api.errors import install_error_handlers
from recplane.api.fast_ingest import IngestFastPath, ingest_route_name
from recplane.api.metrics import MetricsMiddleware, ServerMetrics
from recplane.api.routes import datasets, features, health, ingest, jobs, models, pipelines, quality, runs
from recplane.auth import TokenCache
from recplane.config import Settings
from recplane.runtime import Runtime

__all__ = ["create_app"]

DESCRIPTION = """
recplane's control plane. Every `/v1` route needs `Authorization: Bearer <token>`
(create one with `recplane tokens create --team TEAM`); a token only reaches its own team's datasets.
Errors come back as `{"error": {"code", "message", "details"}}` with a stable code.
"""


class ControlPlaneApp(FastAPI):
    """The FastAPI app, except that ingestion requests take the lean path of :mod:`recplane.api.fast_ingest`
    (the hottest route, answered without FastAPI's middlewares, routing and dependencies; same outcomes)."""

    fast_ingest: IngestFastPath

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = ingest_route_name(scope)
        if name is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self.fast_ingest(name, scope, receive, send)


def create_app(settings: Settings | None = None, *, dev_mode: bool = False) -> FastAPI:
    """Build the app; the runtime (catalog, services) starts with the app and stops with it."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        app.state.tokens = TokenCache(runtime.catalog)
        if settings.scheduler_loop:  # one leader per catalog schedules; other servers stand by
            runtime.scheduler.start()
        if settings.pipelines_loop:  # runs, schedules and triggers; one leader per catalog as well
            runtime.pipelines.start()
        try:
            yield
        finally:
            runtime.close()

    app = ControlPlaneApp(title="recplane", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.fast_ingest = IngestFastPath(app.state)
    app.state.dev_mode = dev_mode
    app.state.metrics = ServerMetrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    install_error_handlers(app)
    for module in (health, datasets, ingest, quality, runs, features, models, jobs, pipelines):
        app.include_router(module.router)
    return app
