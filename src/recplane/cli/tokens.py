"""`recplane tokens ...`: API tokens per team, managed on the catalog this machine is configured for."""

from __future__ import annotations

from typing import Annotated

import typer

from recplane.auth import create_token, list_tokens, revoke_token
from recplane.catalog import Catalog
from recplane.cli.context import settings_of
from recplane.cli.output import console, print_json, print_records

app = typer.Typer(help="API tokens (one team each). Example: recplane tokens create --team recsys",
                  no_args_is_help=True)


def _catalog(ctx: typer.Context) -> Catalog:
    settings = settings_of(ctx)
    settings.home.mkdir(parents=True, exist_ok=True)
    return Catalog(settings.catalog_url)


@app.command()
def create(ctx: typer.Context,
           team: Annotated[str, typer.Option(help="Team the token acts for.")],
           name: Annotated[str, typer.Option(help="A label, e.g. the service using it.")] = "",
           json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create a token; its secret is printed once and cannot be shown again."""
    info = create_token(_catalog(ctx), team, name)
    if json:
        print_json(info)
        return
    console.print(f"Token {info.id} for team [bold]{team}[/]. Store it now; it is not shown again:")
    print(info.secret)


@app.command("list")
def list_(ctx: typer.Context, team: Annotated[str | None, typer.Option()] = None,
          json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List tokens (never their secrets)."""
    print_records(list_tokens(_catalog(ctx), team), ["id", "team", "name", "prefix", "created_at", "revoked"],
                  title="API tokens", as_json=json)


@app.command()
def revoke(ctx: typer.Context, token_id: Annotated[int, typer.Argument(help="Token id.")]) -> None:
    """Revoke a token (the server stops accepting it within seconds)."""
    info = revoke_token(_catalog(ctx), token_id)
    console.print(f"Revoked token {info.id} of team {info.team}.")
