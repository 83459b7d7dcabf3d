"""`recplane jobs ...` and `recplane queues ...`: submit and follow jobs, see why they wait, manage queues."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from recplane.cli.context import client_of, settings_of
from recplane.cli.output import console, print_json, print_records
from recplane.errors import InvalidInput

if TYPE_CHECKING:
    from recplane.scheduler import Job, QueueInfo

__all__ = ["app", "queues_app"]

app = typer.Typer(
    help="Jobs: every piece of compute (train, tune, materialize, predict, evaluate, custom) through one scheduler."
    "\n\nExample:\n\n  recplane jobs submit job.yaml --wait\n\n  recplane jobs list --status queued\n\n"
    "  recplane jobs explain 3f9c2a1b7d04\n\n  recplane jobs logs -f 3f9c2a1b7d04\n\n"
    "Jobs run when `recplane server` or `recplane jobs worker` runs the scheduler on the same catalog.",
    no_args_is_help=True,
)
queues_app = typer.Typer(
    help="Queues: per-team nominal quotas in cohorts, borrowing limits, usage budgets.\n\n"
    "Example:\n\n  recplane queues apply queues.yaml\n\n  recplane queues list",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
JobArg = Annotated[str, typer.Argument(help="Job id (from `recplane jobs list`).")]
_STATUS_STYLE = {
    "queued": "yellow", "admitted": "cyan", "running": "blue", "succeeded": "green", "failed": "red",
    "cancelled": "magenta", "preempted": "magenta",
}


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _resources(job: Job) -> str:
    r = job.resources
    text = f"{r.cpu:g} cpu, {r.memory_gb:g} GB" + (f", {r.gpu:g} gpu" if r.gpu else "")
    return text if job.workers == 1 else f"{job.workers} x ({text})"


def _jobs_table(jobs: list[Job]) -> Table:
    table = Table(title="Jobs", header_style="bold cyan")
    table.add_column("id", no_wrap=True)
    for column in ("name", "kind", "team", "queue", "prio", "status", "attempts", "resources", "created"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(job.id, escape(job.name), job.kind, escape(job.team), escape(job.queue), str(job.priority),
                      _status(job.status), str(job.attempts), _resources(job), f"{job.created_at:%m-%d %H:%M:%S}")
    return table


@app.command()
def submit(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="Job spec (YAML): kind, resources, queue, priority, args ...")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to finish (runs the scheduler here).")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --wait: give up after this many seconds.")] = None,
    json: JsonOpt = False,
) -> None:
    """Queue a job from a YAML spec; prints its id."""
    client = client_of(ctx)
    job = client.submit_job(spec)
    if wait:
        job = client.wait_job(job.id, timeout=timeout)
    if json:
        print_json(job)
        return
    console.print(f"[bold]Job {job.id}[/] {escape(job.name)}: {_status(job.status)} in queue {escape(job.queue)}")
    if job.error:
        console.print(f"  [red]error[/]: {escape(job.error)}")
    if not wait:
        console.print(f"  next: recplane jobs explain {job.id}   recplane jobs logs -f {job.id}")
    if wait and job.status != "succeeded":
        raise typer.Exit(1)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="queued, admitted, running, succeeded, failed, cancelled.")] = None,
    team: Annotated[str | None, typer.Option(help="Only this team's jobs.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue's jobs.")] = None,
    kind: Annotated[str | None, typer.Option(help="train, tune, materialize, predict, evaluate or custom.")] = None,
    limit: Annotated[int, typer.Option(help="Most jobs to show.")] = 50,
    json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    jobs = client_of(ctx).list_jobs(status=status, team=team, queue=queue, kind=kind, limit=limit)
    if json:
        print_json(jobs)
        return
    console.print(_jobs_table(jobs))


@app.command()
def show(ctx: typer.Context, job_id: JobArg, json: JsonOpt = False) -> None:
    """Show one job: spec, status, attempts, result and its status history."""
    job = client_of(ctx).get_job(job_id)
    if json:
        print_json(job)
        return
    console.print(f"[bold]{escape(job.name)}[/] ({job.id}) {_status(job.status)} — {job.kind}, team "
                  f"{escape(job.team)}, queue {escape(job.queue)}, priority {job.priority}")
    console.print(f"Resources: {_resources(job)}   attempts {job.attempts} (retries up to {job.max_retries})"
                  + (f"   preempted {job.preempted_count}x" if job.preempted_count else ""))
    target = job.entrypoint or (" ".join(job.command) if job.command else None)
    if target:
        console.print(f"Runs: {escape(target)}")
    if job.exit_code is not None:
        console.print(f"Exit code: {job.exit_code}")
    if job.error:
        console.print(f"[red]Error[/]: {escape(job.error)}")
    if job.checkpoint:
        console.print(f"Checkpoint: {escape(job.checkpoint)}")
    if job.result:
        trials = job.result.get("trial_results")  # a tune job's trials read best as a table
        rest = {key: value for key, value in job.result.items() if key != "trial_results"}
        console.print(f"Result: {escape(str(rest))}")
        if isinstance(trials, list):
            print_records(trials, ["number", "state", "value", "params", "run_id", "job_id", "error"], title="Trials")
    events = [{"at": e.at, "from": e.from_status, "to": e.to_status, "reason": e.reason} for e in job.events]
    print_records(events, ["at", "from", "to", "reason"], title="History")


@app.command()
def logs(
    ctx: typer.Context,
    job_id: JobArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job finishes.")] = False,
) -> None:
    """Print the job's output (all attempts); -f follows it like tail -f."""
    for chunk in client_of(ctx).job_logs(job_id, follow=follow):
        sys.stdout.write(chunk)
        sys.stdout.flush()


@app.command()
def cancel(ctx: typer.Context, job_id: JobArg, json: JsonOpt = False) -> None:
    """Cancel a job (a running one is stopped: SIGTERM, then SIGKILL after the grace period)."""
    job = client_of(ctx).cancel_job(job_id)
    if json:
        print_json(job)
        return
    state = "being stopped" if job.stop_requested == "cancel" else job.status
    console.print(f"Job {job.id}: {state}")


@app.command()
def retry(ctx: typer.Context, job_id: JobArg, json: JsonOpt = False) -> None:
    """Queue a failed or cancelled job again."""
    job = client_of(ctx).retry_job(job_id)
    if json:
        print_json(job)
        return
    console.print(f"Job {job.id}: {_status(job.status)}")


@app.command()
def explain(ctx: typer.Context, job_id: JobArg, json: JsonOpt = False) -> None:
    """Say in plain words why a job is pending (which quota, which jobs are ahead) or where it stands."""
    explanation = client_of(ctx).explain_job(job_id)
    if json:
        print_json(explanation)
        return
    console.print(f"Job {explanation.job_id} is {_status(explanation.status)}.")
    console.print(escape(explanation.message), soft_wrap=True)  # one line per reason, for grep and for copying


@app.command()
def worker(
    ctx: typer.Context,
    interval: Annotated[float | None, typer.Option(help="Seconds between rounds (default: setting).")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one round and exit.")] = False,
) -> None:
    """Run the scheduler loop here, standalone (no server): admit, start, watch and retry jobs until Ctrl-C.

    Several workers (or servers) on one catalog elect one leader; the others stand by.
    """
    if ctx.find_root().obj.url:
        raise InvalidInput("`recplane jobs worker` schedules a catalog directly; run it without --url.")
    from recplane.runtime import Runtime

    with Runtime(settings_of(ctx)) as runtime:
        scheduler = runtime.scheduler
        if once:
            report = scheduler.tick()
            console.print(f"admitted {len(report.admitted)}, started {len(report.started)}, ended "
                          f"{len(report.ended)}, preempted {len(report.preempted)}, waiting {report.held}")
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console.print(f"scheduler worker on {runtime.catalog.safe_url} (Ctrl-C stops it; jobs keep running)")
        try:
            scheduler.run_forever(interval, stop=stop)
        except KeyboardInterrupt:
            stop.set()
        console.print("scheduler worker stopped")


def _queue_rows(queues: list[QueueInfo]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for queue in queues:
        limit = queue.borrowing_limit
        rows.append({
            "name": queue.name, "team": queue.team, "cohort": queue.cohort, "backend": queue.backend,
            "nominal": f"{queue.nominal.cpu:g} cpu, {queue.nominal.memory_gb:g} GB, {queue.nominal.gpu:g} gpu",
            "borrow limit": "none" if limit is None else ", ".join(
                f"{getattr(limit, r):g} {r}" for r in ("cpu", "memory_gb", "gpu") if getattr(limit, r) is not None),
            "used": f"{queue.used.cpu:g} cpu, {queue.used.memory_gb:g} GB, {queue.used.gpu:g} gpu",
            "running": queue.running, "pending": queue.pending,
            "budget": None if queue.budget is None else queue.budget.model_dump(exclude_none=True),
        })
    return rows


_QUEUE_COLUMNS = ["name", "team", "cohort", "backend", "nominal", "borrow limit", "used", "running", "pending",
                  "budget"]


@queues_app.command("apply")
def apply_queues(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="Queue spec(s) (YAML): one queue, or `queues: [...]`.")],
    json: JsonOpt = False,
) -> None:
    """Create or update queues from YAML (administrators)."""
    queues = client_of(ctx).apply_queue(spec)
    if json:
        print_json(queues)
        return
    print_records(_queue_rows(queues), _QUEUE_COLUMNS, title="Applied queues")


@queues_app.command("list")
def list_queues(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Every queue: quotas, cohort, what it uses now, jobs running and waiting."""
    queues = client_of(ctx).list_queues()
    if json:
        print_json(queues)
        return
    print_records(_queue_rows(queues), _QUEUE_COLUMNS, title="Queues")
