"""`recplane pipelines ...`: apply pipelines, run and backfill them, and see runs as a DAG of step statuses."""

from __future__ import annotations

import signal
import threading
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.tree import Tree

from recplane.cli.context import client_of, settings_of
from recplane.cli.output import console, print_json, print_records
from recplane.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from recplane.pipelines import PipelineRun, StepRun

__all__ = ["app"]

app = typer.Typer(
    help="Pipelines: DAGs of steps run as jobs, cached by content, scheduled (cron), triggered by new dataset "
    "versions, backfilled, and resumed after a restart.\n\nExample:\n\n  recplane pipelines apply pipeline.yaml\n\n"
    "  recplane pipelines run recsys-standard --set dataset=ml100k_ratings --wait\n\n"
    "  recplane pipelines backfill nightly --from 2026-11-01 --to 2026-11-07\n\n"
    "  recplane pipelines show RUN_ID\n\n"
    "Runs advance while `recplane server` or `recplane pipelines worker` runs on the same catalog (or --wait here).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="A param: KEY=VALUE (VALUE is YAML).")]
_STYLE = {"pending": "dim", "queued": "yellow", "running": "blue", "succeeded": "green", "cached": "cyan",
          "failed": "red", "skipped": "dim", "cancelled": "magenta"}


def _status(status: str) -> str:
    return f"[{_STYLE.get(status, 'white')}]{status}[/]"


def _params(pairs: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--set takes KEY=VALUE (e.g. --set dataset=ratings); got {pair!r}.")
        params[key.strip()] = yaml.safe_load(value)
    return params


def _run_rows(runs: list[PipelineRun]) -> list[dict[str, Any]]:
    return [{"id": run.id, "pipeline": f"{run.pipeline} v{run.pipeline_version}", "status": _status(run.status),
             "trigger": run.trigger, "params": ", ".join(f"{k}={v}" for k, v in run.params.items())[:60],
             "created": f"{run.created_at:%m-%d %H:%M:%S}", "error": run.error or ""} for run in runs]


@app.command()
def apply(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Pipeline YAML or .py file, or module:attribute.")],
    json: JsonOpt = False,
) -> None:
    """Create or update a pipeline (a new version only when its spec changed)."""
    info = client_of(ctx).apply_pipeline(source)
    if json:
        print_json(info)
        return
    console.print(f"pipeline [bold]{escape(info.name)}[/] v{info.version}: {len(info.steps)} steps "
                  f"({' → '.join(info.steps)})" + (f", schedule {info.schedule}" if info.schedule else ""))


@app.command()
def run(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Argument(help="Pipeline name (recsys-standard is built in) or a file to apply.")],
    set_: SetOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish (drives it here if needed).")]
    = False,
    timeout: Annotated[float | None, typer.Option(help="With --wait: give up after this many seconds.")] = None,
    json: JsonOpt = False,
) -> None:
    """Start a run with params over the pipeline's defaults; prints its id (with --wait, its DAG)."""
    result = client_of(ctx).run_pipeline(pipeline, params=_params(set_), wait=wait, timeout=timeout)
    if json:
        print_json(result)
    elif wait:
        console.print(dag_tree(result))
    else:
        console.print(f"run [bold]{result.id}[/] of {escape(result.pipeline)} {_status(result.status)}; "
                      f"follow it with: recplane pipelines show {result.id}")


@app.command("list")
def list_(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's runs.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50,
    definitions: Annotated[bool, typer.Option("--pipelines", help="List pipelines instead of runs.")] = False,
    json: JsonOpt = False,
) -> None:
    """Recent runs (or, with --pipelines, the pipelines with their schedules and triggers)."""
    client = client_of(ctx)
    if definitions:
        infos = client.list_pipelines()
        if json:
            print_json(infos)
            return
        print_records([{"name": i.name, "version": i.version, "team": i.team, "steps": len(i.steps),
                        "schedule": i.schedule or "", "next run": i.next_run_at or "",
                        "triggers": ", ".join(t["dataset"] for t in i.triggers)} for i in infos],
                      ["name", "version", "team", "steps", "schedule", "next run", "triggers"], title="Pipelines")
        return
    runs = client.list_pipeline_runs(pipeline=pipeline, status=status, limit=limit)
    if json:
        print_json(runs)
        return
    print_records(_run_rows(runs), ["id", "pipeline", "status", "trigger", "params", "created", "error"],
                  title="Pipeline runs")


def _label(step: StepRun) -> str:
    text = f"[bold]{escape(step.step)}[/] {_status(step.status)}"
    if step.job_id:
        text += f" [dim]job {step.job_id}" + (" inline" if step.inline else "") + "[/]"
    if step.cached_from:
        text += f" [dim](outputs of run {step.cached_from})[/]"
    if step.attempts > 1:
        text += f" [dim]{step.attempts} attempts[/]"
    if step.error:
        text += f"\n[red]{escape(step.error[:300])}[/]"
    return text


def dag_tree(run: PipelineRun) -> Tree:
    """The run's DAG as a Rich tree: each step under its first upstream step, other upstreams named."""
    tree = Tree(f"run [bold]{run.id}[/] of {escape(run.pipeline)} v{run.pipeline_version}: {_status(run.status)}"
                + (f" — [red]{escape(run.error)}[/]" if run.error else ""))
    nodes: dict[str, Tree] = {}
    for step in run.steps:  # spec order puts every step after the steps it needs
        parent = nodes.get(step.needs[0]) if step.needs else None
        label = _label(step)
        if len(step.needs) > 1:
            label += f" [dim](also after {', '.join(step.needs[1:])})[/]"
        nodes[step.step] = (parent or tree).add(label)
    return tree


@app.command()
def show(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A run id, or a pipeline name (shows its newest run).")],
    json: JsonOpt = False,
) -> None:
    """A run's DAG with every step's status, job, cache use and error."""
    client = client_of(ctx)
    try:
        result = client.get_pipeline_run(target)
    except NotFound:
        runs = client.list_pipeline_runs(pipeline=target, limit=1)
        if not runs:
            raise NotFound(f"No pipeline run {target!r}, and no runs of a pipeline called {target!r}.") from None
        result = client.get_pipeline_run(runs[0].id)
    if json:
        print_json(result)
        return
    console.print(dag_tree(result))


@app.command()
def cancel(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="Run id.")], json: JsonOpt = False) -> None:
    """Cancel a run (pending steps never start; running step jobs are cancelled)."""
    result = client_of(ctx).cancel_pipeline_run(run_id)
    if json:
        print_json(result)
    else:
        console.print(f"run {result.id}: cancellation requested ({result.status})")


@app.command()
def backfill(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Argument(help="Pipeline name.")],
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD), inclusive.")],
    param: Annotated[str, typer.Option(help="The param that gets each day.")] = "date",
    set_: SetOpt = None,
    json: JsonOpt = False,
) -> None:
    """One run per day of a date range, the day passed as a param (default `date`)."""
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise InvalidInput(f"--from/--to take YYYY-MM-DD dates: {exc}") from exc
    runs = client_of(ctx).backfill_pipeline(pipeline, first, last, param=param, params=_params(set_))
    if json:
        print_json(runs)
        return
    print_records(_run_rows(runs), ["id", "pipeline", "status", "trigger", "params"], title="Backfill runs")


@app.command()
def worker(
    ctx: typer.Context,
    interval: Annotated[float | None, typer.Option(help="Seconds between passes (default: setting).")] = None,
) -> None:
    """Run the pipeline loop (and the scheduler loop) here, standalone, until Ctrl-C: advance runs, start
    scheduled and triggered ones. Several workers or servers on one catalog elect one leader each."""
    if ctx.find_root().obj.url:
        raise InvalidInput("`recplane pipelines worker` drives a catalog directly; run it without --url.")
    from recplane.runtime import Runtime

    with Runtime(settings_of(ctx)) as runtime:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        runtime.scheduler.start()
        console.print(f"pipeline worker on {runtime.catalog.safe_url} (Ctrl-C stops it; step jobs keep running)")
        try:
            runtime.pipelines.runner.run_forever(interval, stop=stop)
        except KeyboardInterrupt:
            stop.set()
        console.print("pipeline worker stopped")
