"""`recplane features ...`: feature definitions (apply with a plan, list, show) and item text embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from recplane.cli.context import client_of
from recplane.cli.output import console, print_json, print_records

app = typer.Typer(
    help="Feature definitions and item features.\n\nExamples: recplane features apply features/ --dry-run; "
    "recplane features list; recplane features embed-text --source ml100k_items --target ml100k_item_text "
    "--columns title,genres",
    no_args_is_help=True,
)
Kind = Literal["entity", "feature_view", "feature_service"]
_KIND_NAMES: dict[str, Kind] = {
    "entity": "entity",
    "entities": "entity",
    "view": "feature_view",
    "views": "feature_view",
    "feature_view": "feature_view",
    "service": "feature_service",
    "services": "feature_service",
    "feature_service": "feature_service",
}
_LINE_STYLE = {"+": "green", "~": "yellow", "-": "red"}


def _kind(text: str) -> Kind:
    kind = _KIND_NAMES.get(text.strip().lower())
    if kind is None:
        raise typer.BadParameter("kind is entity, view (feature_view) or service (feature_service)")
    return kind


@app.command("apply")
def apply(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A YAML or Python file of definitions, or a folder of them.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; register nothing.")] = False,
    prune: Annotated[bool, typer.Option(help="Also delete registered definitions that PATH does not define.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Validate definitions, print what changes (like terraform plan) and register new versions of changed ones.

    Example: recplane features apply features.yaml --dry-run
    """
    client = client_of(ctx)
    plan = client.plan_features(path, prune=prune) if dry_run else client.apply_features(path, prune=prune)
    if json:
        print_json(plan)
        return
    for line in plan.render().splitlines():
        style = _LINE_STYLE.get(line.lstrip()[:1], "")
        console.print(f"[{style}]{escape(line)}[/]" if style else escape(line))
    if dry_run and plan.has_changes:
        console.print("Dry run: nothing registered. Run without --dry-run to apply.")


@app.command("list")
def list_definitions(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="Only this kind: entity, view or service.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Registered entities, feature views and feature services (latest versions).

    Example: recplane features list --kind view
    """
    infos = client_of(ctx).list_features(kind=_kind(kind) if kind else None)
    rows = [
        {
            "kind": i.kind,
            "name": i.name,
            "version": i.version,
            "source": i.spec.get("source"),
            "features": len(i.spec.get("features", [])) or None,
            "author": i.author,
            "created_at": i.created_at,
        }
        for i in infos
    ]
    columns = ["kind", "name", "version", "source", "features", "author", "created_at"]
    print_records(infos if json else rows, columns, title="Feature definitions", as_json=json)


@app.command("show")
def show(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="entity, view or service.")],
    name: Annotated[str, typer.Argument(help="Its name.")],
    version: Annotated[int | None, typer.Option(help="A past version (default: the latest).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """One definition's spec at a version, and its version history.

    Example: recplane features show view user_stats
    """
    client = client_of(ctx)
    info = client.get_feature_definition(_kind(kind), name, version=version)
    if json:
        print_json(info)
        return
    import yaml

    console.print(
        f"[bold]{info.kind} {info.name}[/] version {info.version} by {info.author or '—'} at "
        f"{info.created_at:%Y-%m-%d %H:%M:%S}"
    )
    shown = info.definition().model_dump(mode="json", exclude_defaults=True)
    console.print(escape(yaml.safe_dump(shown, sort_keys=False).rstrip()))
    versions = client.feature_history(info.kind, info.name)
    console.print(f"Versions: {', '.join(str(v.version) + (' (deleted)' if v.deleted else '') for v in versions)}")


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
