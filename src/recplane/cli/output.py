"""How the CLI shows things: Rich tables for people, JSON for scripts, errors without tracebacks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

__all__ = ["console", "err_console", "print_json", "print_records", "to_plain"]

console = Console()
err_console = Console(stderr=True)


def to_plain(value: Any) -> Any:
    """Pydantic models, dataclasses and datetimes as JSON-ready values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {k: to_plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def print_json(value: Any) -> None:
    """Print a value as indented JSON on stdout (plain, so pipes get clean output)."""
    print(json.dumps(to_plain(value), indent=2, default=str))


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | dict):
        return json.dumps(to_plain(value), default=str)[:60]
    return str(value)


def print_records(
    records: Sequence[Any], columns: Sequence[str], *, title: str | None = None, as_json: bool = False
) -> None:
    """A list of records as a table of the given columns, or as JSON."""
    if as_json:
        print_json(list(records))
        return
    table = Table(title=title, header_style="bold cyan")
    for column in columns:
        table.add_column(column)
    for record in records:
        plain = record if isinstance(record, dict) else to_plain(record)
        table.add_row(*(_cell(plain.get(column) if isinstance(plain, dict) else None) for column in columns))
    console.print(table)
