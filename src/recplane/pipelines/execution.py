"""The ``pipeline_step`` job kind: call a step's function with its resolved inputs; its outputs are the result.

The pipeline runner resolves everything before it submits the job (inputs with step outputs and pinned dataset
versions, params), so the job reads nothing but its own args: it imports the function, turns JSON inputs into
the annotated types (``DatasetRef`` ...), calls it, and returns ``{"outputs": ...}`` as the job's result, which
the runner then records on the step run and in the step cache.
"""

from __future__ import annotations

import functools
import inspect
import typing
from functools import cached_property
from typing import TYPE_CHECKING, Any

from recplane.errors import InvalidSpec
from recplane.pipelines.refs import decode_value, encode_value
from recplane.pipelines.spec import resolve_function
from recplane.scheduler.context import JobContext
from recplane.scheduler.spec import JobSpec

if TYPE_CHECKING:
    from recplane.auth import Principal
    from recplane.runtime import Runtime

__all__ = ["StepContext", "call_step", "prepare", "run"]

_ARGS = {"run_id", "pipeline", "step", "uses", "inputs", "params", "trigger"}
_SEGMENT_ARGS = {"run_id", "pipeline", "version", "segment", "params", "trigger"}


class StepContext:
    """What a step function may ask for with a ``context`` parameter: its run, params and the platform."""

    def __init__(self, job: JobContext | None, args: dict[str, Any]) -> None:
        self.job = job
        self.run_id: str = args.get("run_id", "")
        self.pipeline: str = args.get("pipeline", "")
        self.step: str = args.get("step", "")
        self.params: dict[str, Any] = dict(args.get("params") or {})
        self.trigger: dict[str, Any] = dict(args.get("trigger") or {})

    @property
    def principal(self) -> Principal:
        """Who the step acts as (the pipeline's team, or the administrator)."""
        from recplane.auth import ADMIN

        return ADMIN if self.job is None else self.job.principal

    @cached_property
    def runtime(self) -> Runtime:
        """The platform (datasets, training, registry ...), opened on first use."""
        if self.job is None:
            from recplane.runtime import Runtime

            return Runtime()
        return self.job.runtime


def prepare(spec: JobSpec) -> JobSpec:
    """A pipeline step job carries its run, step and function; the runner built it, so only the shape is checked."""
    allowed, needed = (_SEGMENT_ARGS, {"run_id", "version", "segment"}) if "segment" in spec.args else (
        _ARGS, {"run_id", "step", "uses"})
    missing, unknown = sorted(needed - set(spec.args)), sorted(set(spec.args) - allowed)
    if missing or unknown:
        raise InvalidSpec(f"A pipeline_step job needs args {sorted(allowed)}; missing {missing}, unknown {unknown}. "
                          "Pipeline steps are submitted by the pipeline runner (`recplane pipelines run`).")
    return spec


def call_step(uses: str, inputs: dict[str, Any], context: StepContext) -> Any:
    """Call the step's function with decoded inputs (and the context when it asks); returns encoded outputs."""
    function = resolve_function(uses)
    hints, wants_context = _calling_convention(function)
    kwargs = {name: decode_value(value, hints.get(name, Any)) for name, value in inputs.items()}
    if wants_context:
        kwargs["context"] = context
    return encode_value(function(**kwargs))


@functools.lru_cache(maxsize=1024)
def _calling_convention(function: Any) -> tuple[dict[str, Any], bool]:
    """A step function's parameter annotations and whether it takes ``context`` (read once per function)."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: pass JSON as is
        hints = {}
    return hints, "context" in inspect.signature(function).parameters


def run(context: JobContext) -> dict[str, Any]:
    """The job kind's runner: run the step (or the inline segment), return its outputs as the job's result."""
    args = context.job.args
    if "segment" in args:
        from recplane.pipelines.segment import run_segment

        return run_segment(context)
    outputs = call_step(args["uses"], dict(args.get("inputs") or {}), StepContext(context, args))
    return {"outputs": outputs}
