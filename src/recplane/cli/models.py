"""`recplane models ...`: register model versions, list and show them, move aliases, read alias history, compare."""

from __future__ import annotations

import json as jsonlib
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from recplane.cli.context import client_of
from recplane.cli.output import console, print_json, print_records
from recplane.errors import InvalidInput
from recplane.registry.records import LATEST, parse_model_ref

if TYPE_CHECKING:
    from recplane.registry import AliasEvent, MetricComparison, ModelVersion, RegisteredModel

app = typer.Typer(
    help="The model registry: numbered versions with lineage, aliases with a history of every move.\n\n"
    "Example:\n\n  recplane models register mf-ml100k --run 3f9c2a1b7d04\n\n"
    "  recplane models alias mf-ml100k production 1 --reason 'beats popularity by 12% recall@10'\n\n"
    "  recplane models show mf-ml100k@production\n\n  recplane models history mf-ml100k --alias production\n\n"
    "  recplane models compare mf-ml100k production 2",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
NameArg = Annotated[str, typer.Argument(help="Model name, e.g. mf-ml100k.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the alias history).")]


def _tags(pairs: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--tag takes KEY=VALUE (e.g. --tag owner=ads); got {pair!r}.")
        tags[key] = value
    return tags


def _version_ref(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _aliases_of(version: int, aliases: dict[str, int]) -> str:
    return ", ".join(sorted(alias for alias, points in aliases.items() if points == version)) or ""


@app.command()
def register(
    ctx: typer.Context,
    name: NameArg,
    run: Annotated[str | None, typer.Option("--run", help="A finished run with an exported model.")] = None,
    artifact: Annotated[
        str | None, typer.Option("--artifact", help="A folder with manifest.json (path or fsspec URL).")
    ] = None,
    description: Annotated[str, typer.Option(help="What this version is.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE (repeat for more).")] = None,
    team: Annotated[str | None, typer.Option(help="Owner of a new model (default: yours, else the run's).")] = None,
    json: JsonOpt = False,
) -> None:
    """Register a new version of a model from a run (lineage, params, metrics come along) or a folder."""
    version = client_of(ctx).register_model(
        name, run_id=run, artifact_uri=artifact, description=description, tags=_tags(tag or []), team=team
    )
    if json:
        print_json(version)
        return
    origin = f"run {version.run_id}" if version.run_id else escape(version.lineage.source_uri or "")
    console.print(f"Registered [bold]{escape(version.ref)}[/] ({version.kind}, {version.model_class}) from {origin}")
    console.print(f"Files: {escape(version.artifact_uri)}")


def _models_table(models: list[RegisteredModel]) -> Table:
    table = Table(title="Registered models", header_style="bold cyan")
    for column in ("name", "team", "versions", "latest", "aliases", "updated"):
        table.add_column(column, overflow="fold")
    for model in models:
        aliases = ", ".join(f"{alias}→{version}" for alias, version in model.aliases.items())
        table.add_row(
            escape(model.name),
            escape(model.team),
            str(model.version_count),
            str(model.latest_version or "—"),
            escape(aliases or "—"),
            f"{model.updated_at:%Y-%m-%d %H:%M}",
        )
    return table


@app.command("list")
def list_(ctx: typer.Context, json: JsonOpt = False) -> None:
    """List registered models (your team's, when using a token)."""
    models = client_of(ctx).list_models()
    if json:
        print_json(models)
        return
    console.print(_models_table(models))


def _show_model(model: RegisteredModel, versions: list[ModelVersion]) -> None:
    console.print(f"[bold]{escape(model.name)}[/] — team {escape(model.team)}, {model.version_count} version(s)")
    if model.description:
        console.print(escape(model.description))
    rows = [
        {
            "version": v.version,
            "aliases": _aliases_of(v.version, model.aliases),
            "kind": v.kind,
            "run": v.run_id,
            "data": f"{v.lineage.dataset}@{v.lineage.dataset_version}" if v.lineage.dataset else None,
            "created": v.created_at,
            "by": v.created_by,
        }
        for v in versions
    ]
    print_records(rows, ["version", "aliases", "kind", "run", "data", "created", "by"], title="Versions")


def _show_version(version: ModelVersion, aliases: dict[str, int]) -> None:
    pointing = _aliases_of(version.version, aliases)
    console.print(
        f"[bold]{escape(version.ref)}[/]{f' ({escape(pointing)})' if pointing else ''} — {version.kind}, "
        f"{escape(version.model_class)}, team {escape(version.team)}, by {escape(version.created_by)} "
        f"at {version.created_at:%Y-%m-%d %H:%M:%S}"
    )
    if version.description:
        console.print(escape(version.description))
    lineage = version.lineage.model_dump(exclude_none=True, exclude={"training_set"})
    lineage = {key: value for key, value in lineage.items() if value not in ({}, [])}
    print_records([{"fact": k, "value": v} for k, v in lineage.items()], ["fact", "value"], title="Lineage")
    print_records([{"metric": k, "value": v} for k, v in version.metrics.items()], ["metric", "value"], title="Metrics")
    console.print(f"Files: {escape(version.artifact_uri)}")


@app.command()
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME (the model and its versions), NAME:VERSION or NAME@ALIAS.")],
    json: JsonOpt = False,
) -> None:
    """Show a model with its versions, or one version (NAME:3, NAME@production) with lineage and metrics."""
    client = client_of(ctx)
    name, version_ref = parse_model_ref(ref)
    model = client.get_model(name)
    if version_ref == LATEST and "@" not in ref:
        versions = client.list_model_versions(name)
        if json:
            print_json({"model": model, "versions": versions})
            return
        _show_model(model, versions)
        return
    version = client.get_model_version(name, version_ref)
    if json:
        print_json(version)
        return
    _show_version(version, model.aliases)


@app.command()
def alias(
    ctx: typer.Context,
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="Alias to move or create: production, candidate, any name.")],
    version: Annotated[str, typer.Argument(help="Version number (or another alias, to promote it).")],
    reason: ReasonOpt = "",
    json: JsonOpt = False,
) -> None:
    """Point an alias at a version; the move is kept with who, when and why."""
    event = client_of(ctx).set_model_alias(name, alias, _version_ref(version), reason=reason)
    if json:
        print_json(event)
        return
    before = "new" if event.from_version is None else f"was {event.from_version}"
    console.print(f"{escape(name)}@{escape(alias)} → {event.to_version} ({before})")


@app.command()
def unalias(ctx: typer.Context, name: NameArg, alias: str, reason: ReasonOpt = "", json: JsonOpt = False) -> None:
    """Delete an alias (its history stays)."""
    event = client_of(ctx).delete_model_alias(name, alias, reason=reason)
    if json:
        print_json(event)
        return
    console.print(f"Deleted {escape(name)}@{escape(alias)} (was {event.from_version})")


def _history_table(name: str, events: list[AliasEvent]) -> Table:
    table = Table(title=f"Alias history of {escape(name)}", header_style="bold cyan")
    for column in ("when (UTC)", "alias", "from", "to", "by", "reason"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(
            f"{event.at:%Y-%m-%d %H:%M:%S}",
            escape(event.alias),
            "—" if event.from_version is None else str(event.from_version),
            "[red]deleted[/]" if event.to_version is None else str(event.to_version),
            escape(event.actor),
            escape(event.reason),
        )
    return table


@app.command()
def history(
    ctx: typer.Context,
    name: NameArg,
    alias: Annotated[str | None, typer.Option("--alias", "-a", help="Only this alias.")] = None,
    at: Annotated[
        datetime | None, typer.Option("--at", help="With --alias: which version it pointed to then (ISO, UTC).")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Every alias move of a model, newest first: from which version to which, who, when and why."""
    client = client_of(ctx)
    if at is not None:
        if alias is None:
            raise InvalidInput("--at needs --alias: say which alias to look up, e.g. --alias production.")
        pointer = client.get_model_alias(name, alias, at=at)
        if json:
            print_json(pointer)
            return
        where = "did not exist" if pointer.version is None else f"pointed to version {pointer.version}"
        console.print(f"{escape(name)}@{escape(alias)} {where} at {pointer.at:%Y-%m-%d %H:%M:%S} UTC")
        return
    events = client.model_alias_history(name, alias)
    if json:
        print_json(events)
        return
    console.print(_history_table(name, events))


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(jsonlib.dumps(value) if isinstance(value, bool) else str(value))


def _metric_cells(row: MetricComparison, versions: tuple[int, int]) -> list[str]:
    cells = []
    for index, version in enumerate(versions):
        text = _cell(row.values[index])
        cells.append(f"[bold green]{text}[/]" if row.better == version else text)
    delta = "" if row.delta is None else f"{row.delta:+.4g}"
    return [*cells, delta]


@app.command()
def compare(
    ctx: typer.Context,
    name: NameArg,
    v1: Annotated[str, typer.Argument(help="A version number or alias.")],
    v2: Annotated[str, typer.Argument(help="A version number or alias.")],
    json: JsonOpt = False,
) -> None:
    """Two versions side by side: every metric with its delta (the better value is green), then changed settings."""
    comparison = client_of(ctx).compare_model_versions(name, _version_ref(v1), _version_ref(v2))
    if json:
        print_json(comparison)
        return
    first, second = comparison.versions
    table = Table(title=f"{escape(name)}: {first} vs {second}", header_style="bold cyan")
    for column in ("metric", f"v{first}", f"v{second}", "delta"):
        table.add_column(column)
    for row in comparison.metrics:
        arrow = "" if row.higher_is_better is None else (" ↑" if row.higher_is_better else " ↓")
        table.add_row(f"{escape(row.name)}{arrow}", *_metric_cells(row, comparison.versions))
    console.print(table)
    if comparison.params:
        changed = [{"setting": p.name, f"v{first}": p.values[0], f"v{second}": p.values[1]} for p in comparison.params]
        print_records(changed, ["setting", f"v{first}", f"v{second}"], title="Settings that differ")
