"""The `recplane` command: a thin layer over the SDK, grouped by capability."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from recplane import __version__
from recplane.cli import bench as bench_cmd
from recplane.cli import datasets, features, ingest, jobs, load, models, pipelines, runs, system, tokens
from recplane.cli import train as train_cmd
from recplane.cli.context import CliState
from recplane.cli.demo import demo
from recplane.cli.output import err_console
from recplane.cli.predict import predict
from recplane.cli.serve import serve
from recplane.cli.usage import usage
from recplane.errors import RecplaneError

app = typer.Typer(
    name="recplane",
    help="recplane — the ML platform for recommender systems.\n\n"
    "Runs embedded against ./.recplane (RECPLANE_HOME) unless --url/RECPLANE_URL names a server.\n\n"
    "Start here: recplane demo",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"recplane {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="recplane home (default ./.recplane, env RECPLANE_HOME).")] = None,
    url: Annotated[str | None, typer.Option(envvar="RECPLANE_URL", help="Server URL: act remotely.")] = None,
    token: Annotated[str | None, typer.Option(envvar="RECPLANE_TOKEN", help="API token for --url.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    """Global options."""
    ctx.obj = CliState(home=home, url=url, token=token, debug=debug)


app.command()(system.init)
app.command()(system.server)
app.command()(demo)
app.command("ingest")(ingest.ingest)
app.command("ingest-stream")(ingest.ingest_stream)
app.command("bench")(bench_cmd.bench)
app.command("train")(train_cmd.train)
app.command("tune")(train_cmd.tune)
app.command("predict")(predict)
app.command("serve")(serve)
app.command("usage")(usage)
app.add_typer(system.config_app, name="config")
app.add_typer(datasets.app, name="datasets")
app.add_typer(tokens.app, name="tokens")
app.add_typer(load.app, name="load")
app.add_typer(runs.app, name="runs")
app.add_typer(models.app, name="models")
app.add_typer(features.app, name="features")
app.add_typer(jobs.app, name="jobs")
app.add_typer(jobs.queues_app, name="queues")
app.add_typer(pipelines.app, name="pipelines")


def main() -> None:
    """Console-script entry point: errors print as one clear line unless --debug."""
    debug = "--debug" in sys.argv
    try:
        app()
    except RecplaneError as exc:
        if debug:
            raise
        err_console.print(f"[red]Error[/] {escape(f'[{exc.code}]')}: {escape(exc.message)}")
        sys.exit(2)
