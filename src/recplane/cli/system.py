"""`recplane init`, `recplane config show` and `recplane server`: set-up and the control plane."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from recplane.cli.context import settings_of
from recplane.cli.output import console, print_json, print_records, to_plain
from recplane.config import setting_sources

config_app = typer.Typer(help="Inspect configuration (args > RECPLANE_* env > recplane.yaml > defaults).",
                         no_args_is_help=True)


def init(ctx: typer.Context) -> None:
    """Create the recplane home (catalog database, lake folder) and migrate the catalog."""
    from recplane.catalog import Catalog

    settings = settings_of(ctx)
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "lake").mkdir(exist_ok=True)
    catalog = Catalog(settings.catalog_url)
    catalog.close()
    console.print(f"[green]Initialised[/] recplane home {settings.home.resolve()}")
    console.print(f"  catalog: {catalog.safe_url}\n  lake:    {settings.lake_root}")
    console.print("Next: [bold]recplane load movielens-100k[/] or [bold]recplane datasets create SPEC.yaml[/]")


@config_app.command("show")
def show(ctx: typer.Context, json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print every setting, its effective value and where it came from."""
    overrides = {"home": ctx.find_root().obj.home} if ctx.find_root().obj.home else {}
    rows = [{"setting": n, "value": to_plain(v), "source": s} for n, v, s in setting_sources(overrides)]
    if json:
        print_json(rows)
        return
    print_records(rows, ["setting", "value", "source"], title="recplane configuration")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    dev: Annotated[bool, typer.Option(help="Skip authentication (loopback only!).")] = False,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Run the control plane: REST /v1, /openapi.json, /docs, /healthz, /readyz, /metrics.

    Example: recplane tokens create --team recsys && recplane server --port 8000
    """
    import uvicorn

    from recplane.api import create_app

    settings = settings_of(ctx)
    bind_host, bind_port = host or settings.host, settings.port if port is None else port
    if dev and not _is_loopback(bind_host):
        console.print(f"[red]--dev skips authentication and is refused on {bind_host}: bind to 127.0.0.1.[/]")
        raise typer.Exit(2)
    if dev:
        console.print("[bold red on yellow] DEV MODE: authentication is OFF. Every caller is administrator. [/]")
    app = create_app(settings, dev_mode=dev)
    console.print(f"recplane server on http://{bind_host}:{bind_port} (docs at /docs)")
    uvicorn.run(app, host=bind_host, port=bind_port, log_level=settings.log_level, access_log=access_log,
                timeout_graceful_shutdown=10)


__all__ = ["config_app", "init", "server", "show"]
