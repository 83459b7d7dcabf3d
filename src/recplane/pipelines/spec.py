"""What users write: pipelines as Python (``@step`` functions called inside ``with Pipeline(...)``) or as YAML.

Python::

    from recplane.pipelines import DatasetRef, Pipeline, RunRef, step

    @step
    def snapshot(dataset: str) -> DatasetRef: ...

    @step(max_retries=2)
    def train(data: DatasetRef, epochs: int = 3) -> RunRef: ...

    with Pipeline("nightly", params={"dataset": "ratings"}, schedule="0 3 * * *") as nightly:
        data = snapshot(dataset=nightly.params.dataset)
        train(data=data, epochs=5)

YAML (the same pipeline; ``uses`` names ``module:function`` or a built-in step)::

    name: nightly
    params: {dataset: ratings}
    schedule: "0 3 * * *"                   # cron, UTC
    triggers: [{dataset: ratings}]          # a run per new version of the dataset
    steps:
      - name: snapshot
        uses: mypackage.steps:snapshot
        with: {dataset: "${params.dataset}"}
      - name: train
        uses: mypackage.steps:train
        with: {data: "${steps.snapshot}", epochs: 5}
        max_retries: 2

Both compile to one :class:`PipelineSpec` (what the catalog stores). Steps run as scheduler jobs in their own
process, or ``inline: true`` in a long-lived worker thread of the control plane (light steps: no process start).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recplane.errors import InvalidInput, InvalidSpec
from recplane.pipelines.cron import parse_cron
from recplane.pipelines.dag import Reference, references_in, validate_dag
from recplane.pipelines.refs import encode_value, ref_type_of
from recplane.specs import problems_of, read_yaml_mapping

__all__ = [
    "BUILTIN_STEPS",
    "ParamRef",
    "Pipeline",
    "PipelineSpec",
    "Step",
    "StepOutput",
    "StepSpec",
    "TriggerSpec",
    "check_functions",
    "load_pipeline",
    "resolve_function",
    "step",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_STEP_NAME = r"^[A-Za-z_][A-Za-z0-9_\-]{0,127}$"

#: Built-in steps, by the name a YAML ``uses:`` may give instead of ``module:function``.
BUILTIN_STEPS: dict[str, str] = {
    name: f"recplane.pipelines.standard:{name}"
    for name in ("quality_check", "features", "training_set", "train", "evaluate", "gate", "register",
                 "promote", "noop")
}
_LOCAL_STEPS: dict[str, Callable[..., Any]] = {}  # functions of modules a job process may not import (__main__)
_CURRENT: contextvars.ContextVar[Pipeline | None] = contextvars.ContextVar("recplane_pipeline", default=None)


class StepSpec(BaseModel):
    """One step: the function it calls, its arguments (with references), what it waits for, how it runs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=_STEP_NAME)
    uses: str = Field(min_length=1, description="module:function, or a built-in step name (see BUILTIN_STEPS).")
    needs: list[str] = Field(default_factory=list, description="Steps to wait for besides those referenced.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="Keyword arguments.")
    max_retries: int = Field(0, ge=0, le=100, description="Failed attempts retried by the scheduler.")
    backoff_seconds: float = Field(1.0, ge=0, le=86400)
    timeout_seconds: float | None = Field(None, gt=0)
    inline: bool = Field(False, description="Run in the control plane's worker threads instead of a process.")
    cache: bool = Field(True, description="Reuse outputs when code, inputs and params are unchanged.")
    resources: dict[str, float] | None = Field(None, description="cpu, memory_gb, gpu (default 1 CPU, 1 GB; "
                                               "inline steps 0).")
    queue: str | None = Field(None, description="Scheduler queue (default: the team's default queue).")

    @property
    def target(self) -> str:
        """The ``module:function`` this step calls."""
        return BUILTIN_STEPS.get(self.uses, self.uses)


class TriggerSpec(BaseModel):
    """Start a run whenever ``dataset`` gets a new version (with ``params`` added to the run's params)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(BaseModel):
    """A pipeline: params with defaults, steps forming a DAG, and what starts runs (schedule, triggers)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    description: str = ""
    team: str = Field("default", min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict, description="Declared params and their defaults.")
    schedule: str | None = Field(None, description="Cron expression (UTC), e.g. '0 3 * * *'.")
    triggers: list[TriggerSpec] = Field(default_factory=list)
    steps: list[StepSpec] = Field(min_length=1)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_cron(value)
            except InvalidSpec as exc:
                raise ValueError(exc.message) from exc
        return value

    @model_validator(mode="after")
    def _dag(self) -> PipelineSpec:
        names = [spec.name for spec in self.steps]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"step names must be unique; repeated: {duplicates}")
        for trigger in self.triggers:
            unknown = sorted(set(trigger.params) - set(self.params))
            if unknown:
                raise ValueError(f"trigger on {trigger.dataset!r} sets undeclared params {unknown}")
        self.order()
        return self

    def order(self) -> list[str]:
        """Step names in a dependency order (validates references and cycles)."""
        return validate_dag({s.name: s.needs for s in self.steps}, {s.name: s.with_ for s in self.steps},
                            self.params, pipeline=self.name)

    def step(self, name: str) -> StepSpec:
        """The step called ``name``."""
        for spec in self.steps:
            if spec.name == name:
                return spec
        raise InvalidInput(f"Pipeline {self.name!r} has no step {name!r}.")

    def to_yaml(self) -> str:
        """The YAML form."""
        data = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        data["name"] = self.name
        return yaml.safe_dump(data, sort_keys=False)


class ParamRef:
    """A pipeline param inside ``with Pipeline(...)``: passed to a step, it becomes ``${params.NAME}``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return "${params." + self.name + "}"


class StepOutput:
    """What calling a step inside a pipeline returns: a reference to its outputs (``out["key"]`` goes deeper)."""

    def __init__(self, step: str, path: tuple[str, ...] = ()) -> None:
        self.step, self.path = step, path

    def __getitem__(self, key: str) -> StepOutput:
        return StepOutput(self.step, (*self.path, str(key)))

    def __repr__(self) -> str:
        return str(Reference("steps", self.step, self.path))


class _Params:
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def __getattr__(self, name: str) -> ParamRef:
        return self._pipeline.param(name)

    def __getitem__(self, name: str) -> ParamRef:
        return self._pipeline.param(name)


def _spec_value(value: Any) -> Any:
    """A Python argument as spec JSON: outputs and params become references."""
    if isinstance(value, StepOutput | ParamRef):
        return repr(value)
    if isinstance(value, Mapping):
        return {str(key): _spec_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_spec_value(item) for item in value]
    return encode_value(value)


class Pipeline:
    """Builds a :class:`PipelineSpec` from step calls made inside ``with Pipeline(...) as p:``."""

    def __init__(
        self,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        schedule: str | None = None,
        triggers: Sequence[str | Mapping[str, Any]] = (),
        description: str = "",
        team: str = "default",
    ) -> None:
        self.name, self.description, self.team, self.schedule = name, description, team, schedule
        self.param_defaults = dict(params or {})
        self.triggers = [TriggerSpec(dataset=t) if isinstance(t, str) else TriggerSpec.model_validate(t)
                         for t in triggers]
        self.steps: list[StepSpec] = []
        self._token: contextvars.Token[Pipeline | None] | None = None

    def __enter__(self) -> Pipeline:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    @property
    def params(self) -> _Params:
        """Declared params by attribute: ``p.params.date``."""
        return _Params(self)

    def param(self, name: str) -> ParamRef:
        """A declared param as a step argument."""
        if name not in self.param_defaults:
            raise InvalidSpec(f"Pipeline {self.name!r} declares no param {name!r}; add it to params= "
                              f"(declared: {sorted(self.param_defaults) or 'none'}).")
        return ParamRef(name)

    def add(
        self,
        uses: Step | str,
        *,
        name: str | None = None,
        needs: Sequence[StepOutput | str] = (),
        **arguments: Any,
    ) -> StepOutput:
        """Add a step (a ``@step`` function, ``module:function`` or a built-in name); returns its outputs."""
        options = uses.options if isinstance(uses, Step) else {}
        target = uses.uses if isinstance(uses, Step) else uses
        base = name or options.get("name") or (uses.function.__name__ if isinstance(uses, Step) else
                                                target.rpartition(":")[2] or target)
        step_name = self._free_name(str(base))
        waits = [item.step if isinstance(item, StepOutput) else str(item) for item in needs]
        settings = {key: value for key, value in options.items() if key != "name"}
        self.steps.append(StepSpec.model_validate(
            {"name": step_name, "uses": target, "needs": waits, "with": _spec_value(arguments), **settings}
        ))
        return StepOutput(step_name)

    def _free_name(self, base: str) -> str:
        taken = {spec.name for spec in self.steps}
        if base not in taken:
            return base
        number = 2
        while f"{base}_{number}" in taken:
            number += 1
        return f"{base}_{number}"

    @property
    def spec(self) -> PipelineSpec:
        """The validated spec."""
        return load_pipeline({
            "name": self.name, "description": self.description, "team": self.team, "params": self.param_defaults,
            "schedule": self.schedule, "triggers": [t.model_dump() for t in self.triggers],
            "steps": [s.model_dump(by_alias=True) for s in self.steps],
        })


class Step:
    """A ``@step`` function: called inside a pipeline it adds a step; called anywhere else it just runs."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        self.function = function
        self.options = options
        self.uses = f"{function.__module__}:{function.__qualname__}"
        _LOCAL_STEPS[self.uses] = function
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pipeline = _CURRENT.get()
        if pipeline is None:
            return self.function(*args, **kwargs)
        needs = kwargs.pop("needs", ())
        try:
            bound = inspect.signature(self.function).bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise InvalidSpec(f"Step {self.function.__name__!r}: {exc}") from exc
        return pipeline.add(self, needs=needs, **bound.arguments)


def step(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    max_retries: int = 0,
    backoff_seconds: float = 1.0,
    timeout_seconds: float | None = None,
    inline: bool = False,
    cache: bool = True,
    resources: Mapping[str, float] | None = None,
    queue: str | None = None,
) -> Any:
    """Make a function a pipeline step (``@step`` or ``@step(max_retries=2, inline=True)``).

    Its parameters are the step's inputs (annotate them ``DatasetRef``, ``ModelVersionRef``, ``RunRef`` or a JSON
    type; a parameter named ``context`` receives a :class:`~recplane.pipelines.execution.StepContext`); what it
    returns is its outputs (JSON, references, or mappings of them).
    """
    options: dict[str, Any] = {"max_retries": max_retries, "backoff_seconds": backoff_seconds,
                               "timeout_seconds": timeout_seconds, "inline": inline, "cache": cache}
    options.update({key: value for key, value in (("name", name), ("queue", queue)) if value is not None})
    if resources is not None:
        options["resources"] = dict(resources)

    def wrap(target: Callable[..., Any]) -> Step:
        return Step(target, options)

    return wrap(function) if function is not None else wrap


def resolve_function(uses: str) -> Callable[..., Any]:
    """The function a step calls (a built-in name or ``module:function``; a ``Step`` gives its function)."""
    target = BUILTIN_STEPS.get(uses, uses)
    found: Any = _LOCAL_STEPS.get(target)
    if found is None:
        if ":" not in target:
            raise InvalidSpec(f"Step uses {uses!r}: write module:function or a built-in step "
                              f"({', '.join(sorted(BUILTIN_STEPS))}).")
        found = _imported(target)
    return found.function if isinstance(found, Step) else found


@functools.lru_cache(maxsize=4096)
def _imported(target: str) -> Any:
    """``module:function`` imported once per process (modules are not reloaded anyway)."""
    from recplane.scheduler.kinds import load_callable

    return load_callable(target)


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: check names only
        return {}


def check_functions(spec: PipelineSpec) -> None:
    """Every step's function imports and accepts its arguments; references join compatible types."""
    hints = {s.name: _hints(resolve_function(s.uses)) for s in spec.steps}
    for item in spec.steps:
        function = resolve_function(item.uses)
        if not item.inline and not _importable(function.__module__):
            raise InvalidSpec(f"Step {item.name!r} is defined in {function.__module__!r}, which its job process "
                              "cannot import: move it to a module, or mark it inline=True to run it in the control "
                              "plane's worker threads.")
        _check_signature(spec, item, function, hints)


def _importable(module: str) -> bool:
    """Whether another process can import ``module`` by name (not ``__main__``, not an exec'd namespace)."""
    if module == "__main__":
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _check_signature(spec: PipelineSpec, item: StepSpec, function: Callable[..., Any],
                     hints: dict[str, dict[str, Any]]) -> None:
    parameters = inspect.signature(function).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {n for n, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"context"}
    unknown = sorted(set(item.with_) - named) if not takes_any else []
    if unknown:
        raise InvalidSpec(f"Step {item.name!r} ({item.target}) takes no input {unknown[0]!r}; its inputs are "
                          f"{sorted(named) or 'none'}.")
    for name in named:
        parameter = parameters[name]
        if parameter.default is inspect.Parameter.empty and name not in item.with_:
            raise InvalidSpec(f"Step {item.name!r} ({item.target}) needs input {name!r}: give it under `with:` (a "
                              "value, ${params.NAME} or ${steps.STEP}).")
        _check_type(spec, item, name, hints)


def _check_type(spec: PipelineSpec, item: StepSpec, name: str, hints: dict[str, dict[str, Any]]) -> None:
    value = item.with_.get(name)
    wanted = ref_type_of(hints[item.name].get(name))
    if wanted is None or not isinstance(value, str):
        return
    refs = references_in(value)
    if len(refs) != 1 or refs[0].scope != "steps" or refs[0].path or value.strip() != str(refs[0]):
        return
    produced = ref_type_of(hints.get(refs[0].name, {}).get("return"))
    if produced is not None and produced != wanted:
        raise InvalidSpec(f"Step {item.name!r} input {name!r} wants a {wanted} reference, but step "
                          f"{refs[0].name!r} returns a {produced} reference.")


def _validated(data: dict[str, Any], origin: str) -> PipelineSpec:
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc)
        raise InvalidSpec(f"Invalid pipeline in {origin}: {problems}", details={"errors": problems}) from exc


def _from_python_file(path: Path) -> PipelineSpec:
    module_name = f"recplane_pipeline_{path.stem}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    if loader is None or loader.loader is None:
        raise InvalidSpec(f"Cannot import pipeline file {path}.")
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    loader.loader.exec_module(module)
    found = list(_pipelines_in(module))
    if len(found) != 1:
        raise InvalidSpec(f"{path} defines {len(found)} pipelines; name one as {path}:NAME.")
    return found[0]


def _pipelines_in(module: ModuleType) -> Iterator[PipelineSpec]:
    for value in vars(module).values():
        if isinstance(value, Pipeline):
            yield value.spec
        elif isinstance(value, PipelineSpec):
            yield value


def _attribute(text: str) -> Any:
    """The object ``module:attribute`` names, or None when ``text`` is not that form or does not import."""
    module_name, _, attribute = text.partition(":")
    if not attribute or "\n" in text or " " in text or text.endswith((".yaml", ".yml")):
        return None
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError:
        return None
    for part in attribute.split("."):
        target = getattr(target, part, None)
    return target


def load_pipeline(source: PipelineSpec | Pipeline | dict[str, Any] | str | Path) -> PipelineSpec:
    """A PipelineSpec from a spec, a Pipeline, a mapping, YAML text, a YAML or .py file, or ``module:attribute``."""
    if isinstance(source, PipelineSpec):
        return source
    if isinstance(source, Pipeline):
        return source.spec
    if isinstance(source, dict):
        return _validated(source, "the given mapping")
    text = str(source)
    if text.endswith(".py") and Path(text).is_file():
        return _from_python_file(Path(text))
    target = _attribute(text)
    if target is not None:
        return load_pipeline(target() if callable(target) and not isinstance(target, Pipeline) else target)
    data, origin = read_yaml_mapping(source, what="Pipeline spec", needs="'name' and 'steps'")
    return _validated(data, origin)
