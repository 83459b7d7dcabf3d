"""Materialize jobs: write feature views' latest values to the online store, as a scheduled, accounted job.

``args``: ``views`` (a name or list; default every view), or ``service`` (a feature service's views),
``incremental`` (only rows newer than each view's last run), ``end`` (ISO time; default now).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from recplane.errors import InvalidSpec
from recplane.scheduler.context import JobContext
from recplane.scheduler.spec import JobSpec

__all__ = ["prepare", "run"]

_ARGS = {"views", "service", "incremental", "start", "end"}


def prepare(spec: JobSpec) -> JobSpec:
    """Check the args' names and times now."""
    unknown = sorted(set(spec.args) - _ARGS)
    if unknown:
        raise InvalidSpec(f"Unknown materialize job args {unknown}; it takes {sorted(_ARGS)}.")
    if spec.entrypoint or spec.command:
        raise InvalidSpec("A materialize job runs the materializer; it takes no entrypoint or command.")
    for key in ("start", "end"):
        if spec.args.get(key) is not None:
            _time(spec.args[key], key)
    return spec


def _time(value: Any, key: str) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise InvalidSpec(f"Materialize arg {key}={value!r} is not an ISO time.") from exc


def run(context: JobContext) -> dict[str, Any]:
    """Materialize and report rows read and written per view."""
    args = context.job.args
    result = context.runtime.materializer.materialize(
        args.get("views"),
        service=args.get("service"),
        principal=context.principal,
        start=_time(args["start"], "start") if args.get("start") else None,
        end=_time(args["end"], "end") if args.get("end") else None,
        incremental=bool(args.get("incremental", False)),
    )
    return {
        "views": [view.model_dump(mode="json") for view in result.views],
        "rows_read": result.rows_read,
        "rows_written": result.rows_written,
        "seconds": result.seconds,
    }
