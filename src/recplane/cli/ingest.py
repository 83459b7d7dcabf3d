"""`recplane ingest` and `recplane ingest-stream`: files and NATS JetStream into datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recplane.cli.context import client_of, settings_of
from recplane.cli.output import console, print_json


def ingest(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset to append to.")],
    path: Annotated[Path, typer.Argument(exists=True, help="Parquet, CSV, JSONL/NDJSON or JSON file.")],
    batch_id: Annotated[str | None, typer.Option(help="Idempotency key: re-running is a no-op.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Validate a file against the dataset's schema and append it; bad rows go to NAME__rejected.

    Example: recplane ingest ratings ratings.parquet --batch-id 2026-11-23
    """
    with console.status(f"Ingesting {path} into {name}…"):
        result = client_of(ctx).ingest(name, path, batch_id=batch_id)
    if json:
        print_json(result)
        return
    note = " (duplicate batch: nothing written)" if result.duplicate else ""
    console.print(f"[green]{result.accepted:,} accepted[/], [yellow]{result.rejected:,} rejected[/] → "
                  f"{name} v{result.version}{note}")
    for sample in result.reasons[:5]:
        console.print(f"  rejected: {sample}")


def ingest_stream(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset to append to.")],
    nats: Annotated[str, typer.Option(help="NATS server URL, e.g. nats://127.0.0.1:4222.")],
    subject: Annotated[str, typer.Option(help="Subject carrying JSON rows.")],
    stream: Annotated[str | None, typer.Option(help="JetStream stream (created if missing).")] = None,
    batch_size: Annotated[int, typer.Option(help="Messages per commit at most.")] = 1000,
    max_messages: Annotated[int | None, typer.Option(help="Stop after this many (default: run forever).")] = None,
) -> None:
    """Consume JSON rows from NATS JetStream; messages are acknowledged only after their commit.

    Example: recplane ingest-stream clicks --nats nats://127.0.0.1:4222 --subject events.clicks
    """
    from recplane.auth import ADMIN
    from recplane.ingest import consume_stream
    from recplane.runtime import Runtime

    with Runtime(settings_of(ctx)) as runtime:
        console.print(f"Consuming {subject} from {nats} into {name} (Ctrl-C to stop)…")
        try:
            stats = consume_stream(runtime.ingestion, name, nats_url=nats, subject=subject, stream=stream,
                                   principal=ADMIN, batch_size=batch_size, max_messages=max_messages)
        except KeyboardInterrupt:
            console.print("Stopped.")
            return
    console.print(f"Done: {stats}")
