"""Custom jobs (and predict/evaluate until they get built-in runners): call ``module:function`` with ``args``.

The function gets the job's ``args`` as keyword arguments, plus the :class:`JobContext` as ``context`` when it
has a parameter of that name. What it returns becomes the job's ``result`` (a mapping as is, anything else
JSON-able under ``"value"``). A job with a ``command`` instead runs that program directly and has no result.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from recplane.errors import InvalidSpec
from recplane.scheduler.context import JobContext
from recplane.scheduler.kinds import load_callable
from recplane.scheduler.spec import JobSpec

__all__ = ["prepare", "run"]


def prepare(spec: JobSpec) -> JobSpec:
    """A custom job must say what to run; the entrypoint must import now, not fail at 3 a.m."""
    if spec.command:
        return spec
    if not spec.entrypoint:
        raise InvalidSpec(
            f"A {spec.kind} job needs `entrypoint: module:function` (called with `args`) or `command: [program, ...]`."
        )
    function = load_callable(spec.entrypoint)
    try:
        json.dumps(spec.args)
    except TypeError as exc:
        raise InvalidSpec(f"The args of job {spec.display_name!r} must be JSON: {exc}") from exc
    _check_arguments(function, spec)
    return spec


def _check_arguments(function: Any, spec: JobSpec) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # builtins without a signature: let the call say
    args = dict(spec.args)
    if "context" in signature.parameters:
        args["context"] = None
    try:
        signature.bind(**args)
    except TypeError as exc:
        raise InvalidSpec(f"Entrypoint {spec.entrypoint} cannot take args {sorted(spec.args)}: {exc}") from exc


def run(context: JobContext) -> dict[str, Any] | None:
    """Call the job's function with its args; its return value is the result."""
    entrypoint = context.job.entrypoint
    if not entrypoint:
        raise InvalidSpec(f"Job {context.job.id} has no entrypoint to run.")
    function = load_callable(entrypoint)
    kwargs = dict(context.job.args)
    try:
        if "context" in inspect.signature(function).parameters:
            kwargs["context"] = context
    except (TypeError, ValueError):
        pass
    return as_result(function(**kwargs))


def as_result(value: Any) -> dict[str, Any] | None:
    """A function's return value as a JSON result (None stays None; non-JSON values are shown as text)."""
    if value is None:
        return None
    result = value if isinstance(value, dict) else {"value": value}
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        return {"value": repr(value)}
    return dict(result)
