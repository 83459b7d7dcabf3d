"""`recplane runs ...`: list training runs, show one (config, metrics, epochs, files), compare several."""

from __future__ import annotations

import json as jsonlib
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from recplane.cli.context import client_of
from recplane.cli.output import console, print_json, print_records

if TYPE_CHECKING:
    from recplane.training.runs import ComparisonRow, RunRecord

app = typer.Typer(
    help="Training runs: what was trained on which data and code, how it went, where its files are.\n\n"
    "Example:\n\n  recplane runs list --model mf --status finished\n\n  recplane runs show 3f9c2a1b7d04\n\n"
    "  recplane runs compare 3f9c2a1b7d04 8e1d0c55a2f9",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
RunArg = Annotated[str, typer.Argument(help="Run id (from `recplane runs list`).")]
_EPOCH_METRICS = 4  # validation columns in the epochs table; --json and epochs.parquet have all of them
_STATUS_STYLE = {"running": "yellow", "finished": "green", "failed": "red", "pruned": "magenta"}


def _valid(run: RunRecord) -> str:
    if run.metrics.best_valid is None:
        return "—"
    return f"{run.metrics.valid_metric} {run.metrics.best_valid:.4f}"


def _runs_table(runs: list[RunRecord]) -> Table:
    """One line per run: the id in full (it is what the other commands take), the best validation score."""
    table = Table(title="Training runs", header_style="bold cyan")
    table.add_column("id", no_wrap=True)
    for column in ("name", "model", "status", "dataset", "best valid", "created"):
        table.add_column(column, overflow="fold")
    for run in runs:
        data = run.dataset if run.dataset_version is None else f"{run.dataset}@{run.dataset_version}"
        style = _STATUS_STYLE.get(run.status, "white")
        table.add_row(
            run.id,
            escape(run.name),
            run.model,
            f"[{style}]{run.status}[/]",
            escape(str(data or "—")),
            _valid(run),
            f"{run.created_at:%m-%d %H:%M}",
        )
    return table


@app.command("list")
def list_(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only runs of this model (mf, lightgcn ...).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only runs trained on this dataset.")] = None,
    status: Annotated[str | None, typer.Option(help="running, finished, failed or pruned.")] = None,
    group: Annotated[str | None, typer.Option(help="Only runs of this group (a tuning study).")] = None,
    limit: Annotated[int, typer.Option(help="Most runs to show.")] = 50,
    json: JsonOpt = False,
) -> None:
    """List training runs, newest first (your team's, when using a token)."""
    runs = client_of(ctx).list_runs(model=model, dataset=dataset, status=status, group=group, limit=limit)
    if json:
        print_json(runs)
        return
    console.print(_runs_table(runs))


@app.command()
def show(ctx: typer.Context, run_id: RunArg, json: JsonOpt = False) -> None:
    """Show one run: where it came from, its config, final metrics, epochs and files."""
    run = client_of(ctx).get_run(run_id)
    if json:
        print_json(run)
        return
    style = _STATUS_STYLE.get(run.status, "white")
    console.print(
        f"[bold]{escape(run.name)}[/] ({run.id}) [{style}]{run.status}[/] — model {run.model}, team {escape(run.team)}"
    )
    source = f"git {run.git_sha[:12]}{' (dirty)' if run.git_dirty else ''}" if run.git_sha else "no git checkout"
    console.print(
        f"Data: {escape(str(run.dataset))} v{run.dataset_version}   Code: recplane {run.recplane_version}, {source}"
    )
    if run.error:
        console.print(f"[red]Error[/]: {escape(run.error)}")
    print_records(
        [{"setting": key, "value": value} for key, value in sorted(run.config.items())],
        ["setting", "value"],
        title="Config",
    )
    metrics = run.metrics.model_dump(exclude={"test"}, exclude_none=True)
    rows = [{"metric": f"test.{name}", "value": value} for name, value in sorted(run.metrics.test.items())]
    rows += [{"metric": name, "value": value} for name, value in metrics.items()]
    print_records(rows, ["metric", "value"], title="Metrics")
    valid_names = list(dict.fromkeys(name for epoch in run.epochs for name in epoch.valid))
    if run.metrics.valid_metric in valid_names:  # the metric that picks the best epoch goes first
        valid_names.insert(0, valid_names.pop(valid_names.index(run.metrics.valid_metric)))
    valid_names = valid_names[:_EPOCH_METRICS]
    epochs = [{"epoch": e.epoch, "loss": e.loss, "seconds": e.seconds, **e.valid} for e in run.epochs]
    print_records(epochs, ["epoch", "loss", "seconds", *valid_names], title="Epochs")
    console.print(f"Artifacts: {escape(run.artifacts_uri)}")


def _comparison_cell(row: ComparisonRow, index: int) -> str:
    value = row.values[index]
    if value is None:
        text = "—"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = escape(jsonlib.dumps(value) if isinstance(value, bool) else str(value))
    return f"[bold green]{text}[/]" if row.best == index else text


@app.command()
def compare(
    ctx: typer.Context,
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
    json: JsonOpt = False,
) -> None:
    """Runs side by side: settings that differ, then every final metric; the best value per metric is green."""
    comparison = client_of(ctx).compare_runs(run_ids)
    if json:
        print_json(comparison)
        return
    table = Table(title="Run comparison", header_style="bold cyan")
    table.add_column("")
    for run in comparison.runs:
        table.add_column(f"{escape(run.name)}\n{run.id}")
    for kind in ("param", "metric"):
        rows = [row for row in comparison.rows if row.kind == kind]
        for position, row in enumerate(rows):
            arrow = "" if row.higher_is_better is None else (" ↑" if row.higher_is_better else " ↓")
            cells = [_comparison_cell(row, index) for index in range(len(comparison.runs))]
            table.add_row(f"{escape(row.name)}{arrow}", *cells, end_section=position == len(rows) - 1)
    console.print(table)
