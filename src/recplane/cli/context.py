"""The CLI's shared state: global options and the one Client a command uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from recplane.client import Client
from recplane.config import Settings

__all__ = ["CliState", "client_of", "settings_of"]


@dataclass
class CliState:
    """Global options given before the command."""

    home: Path | None = None
    url: str | None = None
    token: str | None = None
    debug: bool = False
    _client: Client | None = field(default=None, repr=False)


def settings_of(ctx: typer.Context) -> Settings:
    """Settings with the global options applied on top of env and recplane.yaml."""
    state: CliState = ctx.find_root().obj
    return Settings.for_home(state.home)


def client_of(ctx: typer.Context) -> Client:
    """The command's Client: remote with --url/RECPLANE_URL, embedded otherwise. Closed at exit."""
    root = ctx.find_root()
    state: CliState = root.obj
    if state._client is None:
        state._client = Client(state.url, state.token, settings=settings_of(ctx))
        root.call_on_close(state._client.close)
    return state._client
