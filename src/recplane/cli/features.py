"""`recplane features ...`: item features — text embeddings of item titles and categories."""

from __future__ import annotations

from typing import Annotated

import typer

from recplane.cli.context import client_of
from recplane.cli.output import console, print_json

app = typer.Typer(
    help="Item features.\n\nExample: recplane features embed-text --source ml100k_items --target ml100k_item_text "
    "--columns title,genres",
    no_args_is_help=True,
)


def _columns(text: str) -> list[str]:
    columns = [column.strip() for column in text.split(",") if column.strip()]
    if not columns:
        raise typer.BadParameter("name at least one column, e.g. --columns title,genres")
    return columns


@app.command("embed-text")
def embed_text(
    ctx: typer.Context,
    source: Annotated[str, typer.Option(help="Items dataset to read the text from.")],
    target: Annotated[str, typer.Option(help="Embeddings dataset to write (created on first run).")],
    columns: Annotated[str, typer.Option(help="Comma-separated text columns, e.g. title,genres.")],
    id_column: Annotated[str, typer.Option(help="The item id column of the source.")] = "item_id",
    template: Annotated[
        str | None, typer.Option(help="Text template over the columns, e.g. '{title} ({release_year}). {genres}'.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per model call.")] = 64,
    device: Annotated[str, typer.Option(help="Torch device for the model.")] = "cpu",
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Embed one text per item with all-MiniLM-L6-v2 (offline); re-runs encode only new or changed texts.

    Example: recplane features embed-text --source ml100k_items --target ml100k_item_text
    --columns title,release_year,genres --template '{title} ({release_year}). Genres: {genres}'
    """
    from recplane.features import MiniLMEncoder, embed_item_text

    result = embed_item_text(
        client_of(ctx),
        source=source,
        target=target,
        text_columns=_columns(columns),
        id_column=id_column,
        template=template,
        encoder=MiniLMEncoder(batch_size=batch_size, device=device),
        progress=not json,
    )
    if json:
        print_json(result)
        return
    action = f"version {result.version}" if result.written else f"unchanged at version {result.version}"
    console.print(
        f"[green]{result.total:,} items[/] in {result.dataset} ({action}): {result.encoded:,} encoded, "
        f"{result.reused:,} reused, {result.removed:,} removed; {result.model}, {result.seconds:.1f} s"
    )
