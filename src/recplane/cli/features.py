"""`recplane features ...`: feature definitions (apply with a plan, list, show) and item text embeddings."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
import typer
from rich.markup import escape

from recplane.cli.context import client_of
from recplane.cli.output import console, print_json, print_records

if TYPE_CHECKING:
    from recplane.features.skew import SkewReport

app = typer.Typer(
    help="Feature definitions, materialization, online lookups and item features.\n\nExamples: recplane features "
    "apply features/ --dry-run; recplane features list; recplane features materialize --incremental; "
    "recplane features get --service ranker --entity user_id=42; recplane features skew --since 1d; "
    "recplane features embed-text --source ml100k_items --target ml100k_item_text "
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


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time, e.g. 2026-01-31T00:00:00Z") from exc


@app.command("materialize")
def materialize(
    ctx: typer.Context,
    view: Annotated[list[str] | None, typer.Option("--view", help="A feature view (repeat for more).")] = None,
    service: Annotated[str | None, typer.Option(help="Materialize the views of this feature service.")] = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Only rows newer than each view's last materialization.")
    ] = False,
    end: Annotated[str | None, typer.Option(help="As of this ISO time (default: now).")] = None,
    start: Annotated[str | None, typer.Option(help="Ignore rows older than this ISO time.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write the latest feature values per entity (as the training set computes them) to the online store.

    Example: recplane features materialize --view user_stats --incremental
    """
    result = client_of(ctx).materialize(
        view or None,
        service=service,
        start=_moment(start),
        end=_moment(end),
        incremental=incremental,
        progress=not json,
    )
    if json:
        print_json(result)
        return
    for each in result.views:
        rate = each.rows_read / each.seconds if each.seconds > 0 else 0.0
        since = f" since {each.start:%Y-%m-%d %H:%M:%S}" if each.start else ""
        console.print(
            f"[green]{escape(each.view)}[/] v{each.view_version} from {escape(each.source)}@{each.source_version}"
            f"{since}: {each.entities:,} entities, {each.rows_read:,} rows read, {each.rows_written:,} written "
            f"in {each.seconds:.2f} s ({rate:,.0f} rows/s)"
        )
    console.print(f"As of {result.end:%Y-%m-%d %H:%M:%S %Z}: {result.rows_written:,} online rows written.")


def _entity(text: str) -> dict[str, Any]:
    """``user_id=42`` or ``user_id=42,item_id=7``; integers become ints, anything else stays a string."""
    entity: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{text!r}: write entities as key=value, e.g. user_id=42")
        value = value.strip()
        entity[key.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return entity


@app.command("get")
def get(
    ctx: typer.Context,
    entity: Annotated[list[str], typer.Option("--entity", help="key=value[,key=value] (repeat for more).")],
    service: Annotated[str | None, typer.Option(help="A feature service.")] = None,
    feature: Annotated[
        list[str] | None, typer.Option("--feature", help="view:feature or view:* (repeat; instead of --service).")
    ] = None,
    log: Annotated[
        bool | None, typer.Option("--log/--no-log", help="Log the answer for skew reports (default: the setting).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Look up online feature values of entities, with each view's freshness and a status per entity.

    Example: recplane features get --service ranker --entity user_id=42
    """
    if (service is None) == (not feature):
        raise typer.BadParameter("give --service or --feature (one of them)")
    found = client_of(ctx).online_features(
        [_entity(text) for text in entity], service or list(feature or []), log=log
    )
    if json:
        print_json(found.to_dict())
        return
    rows = []
    for index, status in enumerate(found.statuses):
        fresh = {f"event time {view}": times[index] for view, times in found.event_times.items()}
        rows.append({**found.entities[index], "status": status, **found.row(index), **fresh})
    views = [f"event time {view}" for view in found.event_times]
    columns = [*found.entities[0].keys(), "status", *found.features, *views] if rows else []
    print_records(rows, columns, title="Online features")
    if found.request_id is not None:
        console.print(f"Logged as request {found.request_id}.")


def _since(text: str) -> timedelta | datetime:
    from recplane.errors import InvalidInput
    from recplane.features.skew import parse_since

    try:
        return parse_since(text)
    except InvalidInput as exc:
        raise typer.BadParameter(exc.message, param_hint="--since") from exc


@app.command("skew")
def skew(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="Window start: a period back from now (30m, 6h, 1d, 7d) or an ISO time.")],
    feature: Annotated[
        list[str] | None, typer.Option("--feature", help="Only view:feature or view:* (repeat for more).")
    ] = None,
    service: Annotated[str | None, typer.Option(help="Only the features of this feature service.")] = None,
    dataset: Annotated[str | None, typer.Option(help="The served-feature log (default: feature_log).")] = None,
    examples: Annotated[bool, typer.Option("--examples/--no-examples", help="Show differing values.")] = True,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Train-serve skew: each logged online value recomputed by the training-set engine as of its serving time.

    Example: recplane features skew --since 1d --feature user_stats:*
    """
    if service is not None and feature:
        raise typer.BadParameter("give --service or --feature, not both")
    report = client_of(ctx).feature_skew(_since(since), features=service or feature or None, dataset=dataset)
    if json:
        print_json(report)
        return
    _print_skew_table(report)
    console.print(
        f"{report.requests:,} requests, {report.rows_compared:,} values compared, {report.mismatches:,} differ "
        f"({report.mismatch_rate:.2%})."
    )
    for name, why in report.skipped.items():
        console.print(f"[yellow]skipped[/] {escape(name)}: {escape(why)}")
    if examples:
        _print_examples(report)


def _print_skew_table(report: SkewReport) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"Train-serve skew in {report.dataset} since {report.since:%Y-%m-%d %H:%M:%S}",
        header_style="bold cyan",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("feature", no_wrap=True)
    for header in ("rows", "differ", "rate", "null on/off", "mean |Δ|", "max |Δ|"):
        table.add_column(header, justify="right")
    for row in report.features:
        style = "red" if row.mismatches else ""
        table.add_row(
            f"[{style}]{escape(row.feature)}[/]" if style else escape(row.feature),
            f"{row.rows_compared:,}",
            f"{row.mismatches:,}",
            f"{row.mismatch_rate:.2%}",
            f"{row.missing_online}/{row.missing_offline}",
            "—" if row.mean_abs_diff is None else f"{row.mean_abs_diff:.4g}",
            "—" if row.max_abs_diff is None else f"{row.max_abs_diff:.4g}",
        )
    console.print(table)


def _print_examples(report: SkewReport) -> None:
    shown = [(row.feature, example) for row in report.features for example in row.examples]
    if shown:
        console.print("[bold]Differing values[/] (online vs offline):")
    for feature, example in shown:
        entity = ",".join(f"{key}={value}" for key, value in example.entity.items())
        console.print(
            f"  {escape(feature)} {escape(entity)} {example.served_at:%Y-%m-%d %H:%M:%S} {example.status}: "
            f"[red]{escape(_shown(example.online))}[/] vs [green]{escape(_shown(example.offline))}[/] "
            f"[dim]request {example.request_id}[/]"
        )


def _shown(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."
