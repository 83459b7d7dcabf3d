"""`recplane usage`: compute used by jobs, per team (queue, kind, pipeline, job), with its cost."""

from __future__ import annotations

from typing import Annotated

import typer

from recplane.cli.context import client_of
from recplane.cli.output import console, print_json, print_records

__all__ = ["usage"]


def usage(
    ctx: typer.Context,
    team: Annotated[str | None, typer.Option(help="Only this team's usage.")] = None,
    since: Annotated[str, typer.Option(help="Window back from now: 7d, 24h, 30m, 2w ...")] = "7d",
    by: Annotated[str, typer.Option(help="Group by: team, queue, kind, pipeline, job (comma-separated).")] = "team",
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show CPU-, GPU-, memory GB- and wall-hours of finished job attempts, and their cost at the configured
    prices (settings price_cpu_hour, price_gpu_hour, price_memory_gb_hour).

    Example: recplane usage --team recsys --since 7d --by queue,kind
    """
    from recplane.scheduler.spec import parse_duration

    keys = [key.strip() for key in by.split(",") if key.strip()]
    report = client_of(ctx).usage(team=team, since=parse_duration(since), group_by=keys)
    if json:
        print_json(report)
        return
    rows = [{**row.group, **row.model_dump(exclude={"group"})} for row in [*report.rows, report.total]]
    columns = [*keys, "jobs", "attempts", "cpu_hours", "gpu_hours", "memory_gb_hours", "wall_hours", "cost"]
    print_records(rows, columns, title=f"Usage since {report.since:%Y-%m-%d %H:%M} UTC ({report.currency})")
    prices = ", ".join(f"{name.replace('_', '-')} {value:g}" for name, value in report.prices.items())
    console.print(f"[dim]prices per hour: {prices} {report.currency}[/]")
