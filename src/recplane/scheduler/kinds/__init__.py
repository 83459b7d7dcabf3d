"""Job kinds: what a job of each kind runs, as a table of import paths (the scheduler knows no job's insides).

Each :class:`JobKind` names a ``runner`` (``module:function`` called in the job's process with a
:class:`~recplane.scheduler.context.JobContext`) and optionally a ``prepare`` hook (``module:function``, run at
submission to validate and complete the spec, e.g. inline a training spec file). Loading the table imports
nothing; a kind's modules load only when one of its jobs is submitted or runs. Add a kind with
:func:`register_kind`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recplane.errors import InvalidSpec

__all__ = ["JobKind", "job_kind", "kind_names", "load_callable", "register_kind"]


@dataclass(frozen=True)
class JobKind:
    """A kind of job. ``launches_workers``: it starts its own gang processes (the backend starts one process);
    ``graceful_stop``: it reacts to SIGTERM by saving its state and exiting (else SIGTERM ends it at once)."""

    name: str
    runner: str
    description: str
    prepare: str | None = None
    launches_workers: bool = False
    graceful_stop: bool = False


_KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind("custom", "recplane.scheduler.kinds.custom:run", "Any Python function (module:function) or command.",
                prepare="recplane.scheduler.kinds.custom:prepare"),
        JobKind("train", "recplane.scheduler.kinds.train:run", "Train a TrainSpec as a recorded run; resumes from "
                "its checkpoint after preemption.", prepare="recplane.scheduler.kinds.train:prepare",
                launches_workers=True, graceful_stop=True),
        JobKind("tune", "recplane.scheduler.kinds.tune:run", "Hyperparameter search over a TrainSpec's search "
                "space: coordinates the study, every trial a train job.",
                prepare="recplane.scheduler.kinds.tune:prepare", graceful_stop=True),
        JobKind("materialize", "recplane.scheduler.kinds.materialize:run", "Materialize feature views to the "
                "online store.", prepare="recplane.scheduler.kinds.materialize:prepare"),
        JobKind("predict", "recplane.scheduler.kinds.predict:run", "Batch inference of a deployment into a "
                "dataset (or your entrypoint).", prepare="recplane.scheduler.kinds.predict:prepare"),
        JobKind("evaluate", "recplane.scheduler.kinds.custom:run", "Offline evaluation: your entrypoint or command.",
                prepare="recplane.scheduler.kinds.custom:prepare"),
        JobKind("pipeline_step", "recplane.pipelines.execution:run", "One step of a pipeline run (submitted by "
                "the pipeline runner).", prepare="recplane.pipelines.execution:prepare"),
    )
}


def register_kind(kind: JobKind) -> None:
    """Add (or replace) a job kind."""
    _KINDS[kind.name] = kind


def kind_names() -> list[str]:
    """The registered kinds, sorted."""
    return sorted(_KINDS)


def job_kind(name: str) -> JobKind:
    """The kind called ``name``; InvalidSpec lists the known ones."""
    kind = _KINDS.get(name)
    if kind is None:
        raise InvalidSpec(f"Unknown job kind {name!r}; choose one of {', '.join(kind_names())}.")
    return kind


def load_callable(path: str) -> Callable[..., Any]:
    """The function named by ``module:function`` (dotted attributes allowed after the colon)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise InvalidSpec(f"{path!r} is not module:function.")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidSpec(f"Cannot import {module_name!r} for entrypoint {path!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise InvalidSpec(f"{module_name!r} has no {attribute!r} (entrypoint {path!r}).") from exc
    if not callable(target):
        raise InvalidSpec(f"Entrypoint {path!r} is not callable.")
    return target
