"""`recplane datasets ...`: register, evolve, inspect, time-travel, maintain and check datasets."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from recplane.cli.context import client_of
from recplane.cli.output import console, print_json, print_records

app = typer.Typer(
    help="Versioned datasets on Delta Lake.\n\nExample:\n\n  recplane datasets create ratings.yaml\n\n"
    "  recplane datasets history ratings\n\n  recplane datasets read ratings --version 3 --limit 5",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NameArg = Annotated[str, typer.Argument(help="Dataset name.")]


@app.command()
def create(ctx: typer.Context, spec: Annotated[Path, typer.Argument(exists=True, help="Spec YAML file.")],
           json: JsonOpt = False) -> None:
    """Register a new dataset from a YAML spec (version 0, empty)."""
    info = client_of(ctx).create_dataset(spec)
    if json:
        print_json(info)
        return
    console.print(f"[green]Created[/] dataset [bold]{info.name}[/] (team {info.team}) at {info.location}")


@app.command()
def apply(ctx: typer.Context, spec: Annotated[Path, typer.Argument(exists=True, help="Spec YAML file.")],
          json: JsonOpt = False) -> None:
    """Create a dataset, or evolve it to the spec (new nullable columns, int/float widening)."""
    result = client_of(ctx).apply_dataset(spec)
    if json:
        print_json(result)
        return
    console.print(f"[green]{result.action}[/] {result.dataset}: {result.message}")


@app.command("list")
def list_(ctx: typer.Context, json: JsonOpt = False) -> None:
    """List datasets (your team's, when using a token)."""
    rows = client_of(ctx).list_datasets()
    print_records(rows, ["name", "team", "current_version", "schema_version", "description"],
                  title="Datasets", as_json=json)


@app.command()
def show(ctx: typer.Context, name: NameArg) -> None:
    """Show a dataset's registration and spec."""
    print_json(client_of(ctx).get_dataset(name))


@app.command()
def history(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """List versions: operation, rows added/removed, schema version, author."""
    rows = client_of(ctx).history(name)
    print_records(rows, ["version", "timestamp", "operation", "rows_added", "rows_removed", "schema_version",
                         "author"], title=f"History of {name}", as_json=json)


@app.command()
def stats(ctx: typer.Context, name: NameArg,
          version: Annotated[int | None, typer.Option(help="Version (default newest).")] = None,
          json: JsonOpt = False) -> None:
    """Rows, bytes, files and per-column null rate, min/max, distinct estimate."""
    result = client_of(ctx).stats(name, version=version)
    if json:
        print_json(result)
        return
    console.print(f"[bold]{result.name}[/] v{result.version}: {result.rows:,} rows, "
                  f"{result.bytes:,} bytes in {result.files} files")
    print_records(result.columns, ["name", "type", "null_rate", "min", "max", "distinct_estimate"])


@app.command()
def read(
    ctx: typer.Context,
    name: NameArg,
    version: Annotated[int | None, typer.Option(help="Read this version (time travel).")] = None,
    as_of: Annotated[datetime | None, typer.Option("--as-of", help="Read as of this time (ISO, UTC).")] = None,
    columns: Annotated[str | None, typer.Option(help="Comma-separated columns.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 20,
    json: JsonOpt = False,
) -> None:
    """Show rows now, at a version, or as of a time."""
    table = client_of(ctx).read(name, version=version, as_of=as_of,
                                columns=columns.split(",") if columns else None)
    rows = table.slice(0, limit).to_pylist()
    if not json:
        console.print(f"{table.num_rows:,} rows; showing {len(rows)}")
    print_records(rows, table.column_names, as_json=json)


@app.command()
def compact(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """Merge small files into large ones (same rows, new version)."""
    result = client_of(ctx).compact(name)
    if json:
        print_json(result)
        return
    console.print(f"Compacted {name}: {result.files_removed} files → {result.files_added} (v{result.version})")


@app.command()
def retention(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """Delete rows older than the dataset's retention and vacuum their files."""
    result = client_of(ctx).enforce_retention(name)
    if json:
        print_json(result)
        return
    console.print(f"Retention on {name}: {result.rows_removed:,} rows removed, "
                  f"{result.files_removed} files vacuumed (v{result.version})")


@app.command()
def check(
    ctx: typer.Context,
    name: NameArg,
    version: Annotated[int | None, typer.Option(help="Version to check (default newest).")] = None,
    reference: Annotated[int | None, typer.Option(help="Reference version for drift rules.")] = None,
    json: JsonOpt = False,
) -> None:
    """Run the dataset's quality rules; exit code 1 when a blocking rule fails."""
    report = client_of(ctx).check(name, version=version, reference_version=reference)
    if json:
        print_json(report)
    else:
        verdict = "[green]PASSED[/]" if report.passed else "[red]FAILED[/]"
        console.print(f"Quality of {name} v{report.version}: {verdict} (report {report.id})")
        print_records(report.results, ["name", "severity", "passed", "message"])
    if not report.passed:
        raise typer.Exit(1)


@app.command()
def reports(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """List stored quality reports, newest first."""
    rows = client_of(ctx).quality_reports(name)
    print_records(rows, ["id", "version", "passed", "created_at"], title=f"Quality reports of {name}",
                  as_json=json)
