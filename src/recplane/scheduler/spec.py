"""What users write: job specs and queue specs (YAML or Python), and the durations they use (``7d``, ``90s``).

A job::

    kind: custom                      # train, tune, materialize, predict, evaluate or custom
    name: nightly-export
    team: recsys
    queue: recsys                     # default: the queue named "default"
    priority: 10                      # higher first, within its queue
    resources: {cpu: 2, memory_gb: 4, gpu: 0}   # per worker
    workers: 1                        # gang size: all workers start together or none does
    max_retries: 2                    # failed attempts retried with exponential backoff
    backoff_seconds: 5
    timeout_seconds: 3600
    entrypoint: mypackage.jobs:export # custom jobs: module:function, called with `args` as keyword arguments
    args: {day: "2026-11-28"}
    env: {LOG_LEVEL: debug}

A queue (one per team, usually; queues in a cohort lend each other idle quota)::

    name: recsys
    team: recsys
    cohort: research
    nominal: {cpu: 8, memory_gb: 32}
    borrowing_limit: {cpu: 4}         # omit to borrow any idle cohort quota; a resource left out is unlimited
    budget: {window: 7d, cpu_hours: 500}   # optional: hold the queue's jobs once the window's usage passes it
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recplane.errors import InvalidInput, InvalidSpec
from recplane.scheduler.admission import Resources
from recplane.specs import problems_of, read_yaml_mapping

__all__ = [
    "DEFAULT_QUEUE",
    "BudgetSpec",
    "JobSpec",
    "QueueSpec",
    "ResourceLimit",
    "ResourceSpec",
    "load_job_spec",
    "load_queue_specs",
    "parse_duration",
]

DEFAULT_QUEUE = "default"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | float | timedelta) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` or a number of seconds, as a timedelta."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float):
        return timedelta(seconds=float(text))
    match = _DURATION.match(text)
    if match is None:
        raise InvalidInput(f"Duration {text!r} is not understood; write a number with s, m, h, d or w (e.g. 7d).")
    return timedelta(seconds=float(match.group(1)) * _SECONDS[match.group(2) or "s"])


class ResourceSpec(BaseModel):
    """CPUs, memory (GB) and GPUs: what one worker of a job needs."""

    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(1.0, ge=0, description="CPU cores (fractions allowed).")
    memory_gb: float = Field(1.0, ge=0, description="Memory in GB.")
    gpu: float = Field(0.0, ge=0, description="GPUs.")

    def to_resources(self) -> Resources:
        """As the planner's :class:`Resources`."""
        return Resources(self.cpu, self.memory_gb, self.gpu)


class QuotaSpec(BaseModel):
    """An amount of every resource, zero unless given (nominal quotas)."""

    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(0.0, ge=0)
    memory_gb: float = Field(0.0, ge=0)
    gpu: float = Field(0.0, ge=0)

    def to_resources(self) -> Resources:
        """As the planner's :class:`Resources`."""
        return Resources(self.cpu, self.memory_gb, self.gpu)


class ResourceLimit(BaseModel):
    """A borrowing limit per resource; a resource left out (null) is not limited."""

    model_config = ConfigDict(extra="forbid")

    cpu: float | None = Field(None, ge=0)
    memory_gb: float | None = Field(None, ge=0)
    gpu: float | None = Field(None, ge=0)

    def to_resources(self) -> Resources:
        """As the planner's :class:`Resources` (unlimited as infinity)."""
        return Resources(*(math.inf if value is None else value for value in (self.cpu, self.memory_gb, self.gpu)))


class BudgetSpec(BaseModel):
    """A usage cap per rolling window: once the queue's ledger passes any limit, its jobs wait."""

    model_config = ConfigDict(extra="forbid")

    window: str = Field("7d", description="Rolling window, e.g. 7d, 24h.")
    cpu_hours: float | None = Field(None, ge=0)
    gpu_hours: float | None = Field(None, ge=0)
    memory_gb_hours: float | None = Field(None, ge=0)
    cost: float | None = Field(None, ge=0, description="Cost cap at the configured prices.")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        try:
            if parse_duration(value).total_seconds() <= 0:
                raise ValueError("the window must be longer than zero")
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc
        return value

    @property
    def window_delta(self) -> timedelta:
        """The window as a timedelta."""
        return parse_duration(self.window)


class QueueSpec(BaseModel):
    """A queue: who owns it, its nominal quota, the cohort it shares with, how much it may borrow, where it runs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    team: str = Field(min_length=1, max_length=128)
    cohort: str | None = Field(None, pattern=_NAME, description="Queues of one cohort lend each other idle quota.")
    nominal: QuotaSpec = Field(default_factory=QuotaSpec, description="Guaranteed quota (reclaimed if lent).")
    borrowing_limit: ResourceLimit | None = Field(None, description="Most it may borrow; omitted: no limit.")
    backend: str = Field("local", description="Job backend of this queue: local, inline, ray or kubernetes.")
    strict_fifo: bool = Field(False, description="Admit nothing past a head job that does not fit.")
    budget: BudgetSpec | None = None

    def borrowing_resources(self) -> Resources | None:
        """The borrowing limit as :class:`Resources` (None: unlimited)."""
        return None if self.borrowing_limit is None else self.borrowing_limit.to_resources()


class JobSpec(BaseModel):
    """A job: what to run (kind + entrypoint/args), for whom (team, queue, priority), with what, and how to retry."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("custom", description="train, tune, materialize, predict, evaluate or custom.")
    name: str | None = Field(None, max_length=256)
    team: str = Field("default", min_length=1, max_length=128)
    queue: str = Field(DEFAULT_QUEUE, pattern=_NAME)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000, description="Higher runs first within its queue.")
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="Per worker.")
    workers: int = Field(1, ge=1, le=1024, description="Gang size: admitted all at once or not at all.")
    max_retries: int = Field(0, ge=0, le=100, description="Failed attempts retried (preemptions don't count).")
    backoff_seconds: float = Field(1.0, ge=0, le=86400, description="First retry delay; doubles per retry.")
    timeout_seconds: float | None = Field(None, gt=0, description="Stop an attempt running longer than this.")
    entrypoint: str | None = Field(None, description="module:function (custom jobs; optional for other kinds).")
    command: list[str] | None = Field(None, description="A program and its arguments, instead of an entrypoint.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments / the kind's settings.")
    env: dict[str, str] = Field(default_factory=dict)
    pipeline: str | None = Field(None, max_length=256, description="The pipeline run this job belongs to.")

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, value: str | None) -> str | None:
        if value is not None and not _ENTRYPOINT.match(value):
            raise ValueError(f"{value!r} is not module:function (e.g. mypackage.jobs:export)")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> JobSpec:
        if self.entrypoint and self.command:
            raise ValueError("give either entrypoint or command, not both")
        if self.command is not None and not self.command:
            raise ValueError("command needs at least the program to run")
        return self

    @property
    def display_name(self) -> str:
        """The name, or ``kind:entrypoint``."""
        return self.name or f"{self.kind}:{self.entrypoint or (self.command or [''])[0] or self.kind}"


def _validated(model: type[BaseModel], data: dict[str, Any], origin: str, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc)
        raise InvalidSpec(f"Invalid {what} in {origin}: {problems}", details={"errors": problems}) from exc


def load_job_spec(source: JobSpec | dict[str, Any] | str | Path) -> JobSpec:
    """A JobSpec from a spec, a mapping, YAML text or a YAML file."""
    if isinstance(source, JobSpec):
        return source
    if isinstance(source, dict):
        return _validated(JobSpec, source, "the given mapping", "job spec")
    data, origin = read_yaml_mapping(source, what="Job spec", needs="'kind'")
    return _validated(JobSpec, data, origin, "job spec")


def load_queue_specs(source: QueueSpec | dict[str, Any] | list[Any] | str | Path) -> list[QueueSpec]:
    """Queue specs from a spec, a mapping (one queue, or ``{queues: [...]}``), a list, YAML text or a file."""
    if isinstance(source, QueueSpec):
        return [source]
    if isinstance(source, list):
        return [spec for item in source for spec in load_queue_specs(item)]
    origin = "the given mapping"
    if not isinstance(source, dict):
        source, origin = read_yaml_mapping(source, what="Queue spec", needs="'name' and 'team', or 'queues'")
    if "queues" in source:
        items = source["queues"]
        if not isinstance(items, list) or set(source) != {"queues"}:
            raise InvalidSpec(f"{origin}: 'queues' must be the only key, holding a list of queues.")
        return [_validated(QueueSpec, item, origin, "queue spec") for item in items]
    return [_validated(QueueSpec, source, origin, "queue spec")]
