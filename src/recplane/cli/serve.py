"""`recplane serve DEPLOYMENT.yaml`: the online recommendation service of one deployment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from recplane.cli.context import settings_of
from recplane.cli.output import console
from recplane.cli.system import _is_loopback

__all__ = ["serve"]


def serve(
    ctx: typer.Context,
    deployment: Annotated[Path, typer.Argument(help="Deployment spec (YAML).", exists=True, dir_okay=False)],
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8100,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes; each loads its own copy of the models.")] = 1,
    threads: Annotated[int | None, typer.Option(min=1, help="Model threads per worker (serving.threads).")] = None,
    dev: Annotated[bool, typer.Option(help="Skip authentication (loopback only!).")] = False,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve recommendations: POST /v1/recommend, /v1/score, /v1/feedback; /readyz, /metrics, /openapi.json.

    The models load and warm up in the background; /readyz answers 200 once they serve. Moving an alias the
    deployment follows (recplane models alias ...) swaps the new version in without failing a request.

    Example: recplane serve deployment.yaml --port 8100 --dev
    """
    import uvicorn

    from recplane.serving.server import DEPLOYMENT_ENV, DEV_ENV, ServingApp, log_to_stderr
    from recplane.serving.spec import load_deployment

    settings = settings_of(ctx)
    spec = load_deployment(deployment)
    if threads is not None:
        spec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"threads": threads})})
    if dev and not _is_loopback(host):
        console.print(f"[red]--dev skips authentication and is refused on {host}: bind to 127.0.0.1.[/]")
        raise typer.Exit(2)
    if dev:
        console.print("[bold red on yellow] DEV MODE: authentication is OFF. [/]")
    log_to_stderr(settings.log_level)
    _print_urls(spec.name, host, port, dev)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": settings.log_level,
        "access_log": access_log,
        "timeout_graceful_shutdown": 10,
    }
    if workers == 1:
        from recplane.runtime import Runtime

        app = ServingApp(spec, Runtime(settings), dev_mode=dev, close_runtime=True)
        uvicorn.run(app, **options)
        return
    # Worker processes build their own app (and runtime) from the environment.
    os.environ[DEPLOYMENT_ENV] = spec.model_dump_json()
    os.environ[DEV_ENV] = "1" if dev else "0"
    os.environ["RECPLANE_HOME"] = str(settings.home.resolve())
    # Loading models holds the GIL for seconds at a time; uvicorn's 5 s liveness ping would kill such a worker.
    uvicorn.run(
        "recplane.serving.server:app_from_environment",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=120,
        **options,
    )


def _print_urls(name: str, host: str, port: int, dev: bool) -> None:
    base = f"http://{host}:{port}"
    auth = "" if dev else " -H 'Authorization: Bearer $RECPLANE_TOKEN'"
    console.print(
        f"recplane serve [bold]{name}[/] on {base} — loading models; ready when {base}/readyz says 200", soft_wrap=True
    )
    console.print(
        f"  try: curl -s {base}/v1/recommend{auth} -H 'Content-Type: application/json' "
        '-d \'{"user_id": 1, "k": 10}\'',
        soft_wrap=True,
        markup=False,
    )
    console.print(f"  also: {base}/v1/deployment  {base}/metrics  {base}/openapi.json", soft_wrap=True)
