"""`recplane predict DEPLOYMENT --users DATASET --out DATASET`: batch inference into a versioned dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from recplane.cli.context import client_of
from recplane.cli.output import console, print_json

__all__ = ["predict"]


def predict(
    ctx: typer.Context,
    deployment: Annotated[Path, typer.Argument(help="Deployment spec (YAML): retrieval, ranking, rules, fallback.")],
    users: Annotated[str, typer.Option("--users", help="Dataset holding the users to recommend for.")],
    out: Annotated[str, typer.Option("--out", help="Dataset to write the top-k into (created if missing).")],
    users_column: Annotated[str, typer.Option(help="Column of --users with the user ids.")] = "user_id",
    k: Annotated[int | None, typer.Option(min=1, help="Items per user (default: the deployment's k).")] = None,
    chunk: Annotated[int, typer.Option(min=1, help="Users per batch: bounds memory.")] = 4096,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write a deployment's top-k for every user of a dataset as one new version of another dataset.

    Rows: user_id, rank, item_id, score, retrieval_score, retrieval_model, ranking_model, fallback, predicted_at.
    The commit records the deployment, the model versions and the users' dataset version.

    Examples:

      recplane predict home-feed.yaml --users shop_users --out home_feed_top10

      recplane predict home-feed.yaml --users events --users-column user_id --out top20 --k 20 --chunk 8192
    """
    result = client_of(ctx).predict(
        deployment, users=users, out=out, k=k, users_column=users_column, chunk=chunk, progress=progress and not json
    )
    if json:
        print_json(result)
        return
    console.print(
        f"[bold green]Wrote {result.rows:,} rows[/] for {result.users:,} users to {escape(result.out)}"
        f"@{result.version} in {result.seconds:.1f}s ({result.users / max(result.seconds, 1e-9):,.0f} users/s)"
    )
    models = ", ".join(f"{role} {version}" for role, version in result.model_versions.items())
    console.print(f"  models: {escape(models)}; fallback users: {result.fallback_users:,}")
    console.print(f"  next: recplane datasets show {escape(result.out)}")
