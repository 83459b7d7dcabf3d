"""The command-line interface (Typer + Rich)."""

from recplane.cli.app import app, main

__all__ = ["app", "main"]
