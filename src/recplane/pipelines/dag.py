"""The DAG of a pipeline, as pure functions: references between steps, validation, order, readiness.

A step's ``with`` values may hold references: a string that is exactly ``${params.NAME}`` or
``${steps.STEP}`` / ``${steps.STEP.key.subkey}`` becomes that value (any JSON type); references inside longer
strings are interpolated as text (``"day=${params.date}"``). A step depends on every step it references and on
the ones it lists under ``needs``. Nothing here touches the catalog.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recplane.errors import InvalidInput, InvalidSpec

__all__ = ["Reference", "dependencies", "references_in", "resolve_value", "topological_order", "validate_dag"]

_WHOLE = re.compile(r"^\$\{\s*([A-Za-z_][\w.\-]*)\s*\}$")
_INLINE = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*\}")


@dataclass(frozen=True)
class Reference:
    """``params.NAME`` or ``steps.STEP[.path...]`` inside a step's arguments."""

    scope: str
    name: str
    path: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse the inside of ``${...}``."""
        scope, _, rest = text.partition(".")
        parts = rest.split(".") if rest else []
        if scope not in ("params", "steps") or not parts or not all(parts):
            raise InvalidSpec(
                f"${{{text}}} is not a reference; write ${{params.NAME}}, ${{steps.STEP}} or ${{steps.STEP.key}}."
            )
        if scope == "params" and len(parts) > 1:
            raise InvalidSpec(f"${{{text}}}: a param reference is ${{params.NAME}}, without a path.")
        return cls(scope, parts[0], tuple(parts[1:]))

    def __str__(self) -> str:
        return "${" + ".".join((self.scope, self.name, *self.path)) + "}"


def references_in(value: Any) -> list[Reference]:
    """Every reference inside a JSON value (recursively)."""
    if isinstance(value, str):
        return [Reference.parse(match) for match in _INLINE.findall(value)]
    if isinstance(value, Mapping):
        return [ref for item in value.values() for ref in references_in(item)]
    if isinstance(value, list | tuple):
        return [ref for item in value for ref in references_in(item)]
    return []


def _lookup(ref: Reference, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
    if ref.scope == "params":
        if ref.name not in params:
            raise InvalidInput(f"{ref} has no value: the run has no param {ref.name!r}.")
        return params[ref.name]
    if ref.name not in outputs:
        raise InvalidInput(f"{ref} has no value yet: step {ref.name!r} has not produced its outputs.")
    value = outputs[ref.name]
    for key in ref.path:
        if not isinstance(value, Mapping) or key not in value:
            raise InvalidInput(f"{ref}: the outputs of step {ref.name!r} have no {key!r} (they are {value!r:.200}).")
        value = value[key]
    return value


def resolve_value(value: Any, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
    """``value`` with its references replaced by params and step outputs."""
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole:
            return _lookup(Reference.parse(whole.group(1)), params, outputs)

        def text_of(match: re.Match[str]) -> str:
            found = _lookup(Reference.parse(match.group(1)), params, outputs)
            return found if isinstance(found, str) else json.dumps(found)

        return _INLINE.sub(text_of, value)
    if isinstance(value, Mapping):
        return {key: resolve_value(item, params, outputs) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_value(item, params, outputs) for item in value]
    return value


def dependencies(needs: Iterable[str], arguments: Mapping[str, Any]) -> list[str]:
    """The steps a step waits for: its ``needs`` and every step its arguments reference, in first-seen order."""
    found = list(needs) + [ref.name for ref in references_in(dict(arguments)) if ref.scope == "steps"]
    return list(dict.fromkeys(found))


def validate_dag(steps: Mapping[str, Sequence[str]], arguments: Mapping[str, Mapping[str, Any]],
                 params: Iterable[str], *, pipeline: str) -> list[str]:
    """Check names, references and cycles; returns the steps in a dependency order.

    ``steps`` maps each step to its ``needs``; ``arguments`` to its ``with`` values; ``params`` are the declared
    params.
    """
    declared = set(params)
    graph: dict[str, list[str]] = {}
    for name, needs in steps.items():
        for ref in references_in(dict(arguments.get(name, {}))):
            if ref.scope == "params" and ref.name not in declared:
                raise InvalidSpec(f"Pipeline {pipeline!r}, step {name!r}: {ref} names no declared param; declare it "
                                  f"under `params:` (declared: {sorted(declared) or 'none'}).")
        graph[name] = dependencies(needs, arguments.get(name, {}))
        for other in graph[name]:
            if other not in steps:
                raise InvalidSpec(f"Pipeline {pipeline!r}, step {name!r} depends on {other!r}, which is not a step "
                                  f"of the pipeline (steps: {', '.join(steps)}).")
            if other == name:
                raise InvalidSpec(f"Pipeline {pipeline!r}, step {name!r} depends on itself.")
    return topological_order(graph, pipeline=pipeline)


def topological_order(graph: Mapping[str, Sequence[str]], *, pipeline: str = "") -> list[str]:
    """Steps so that each comes after its dependencies (declaration order among equals); InvalidSpec on a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in graph:
        if state.get(start) == 2:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        state[start] = 1
        while stack:
            node, index = stack[-1]
            children = graph.get(node, ())
            if index < len(children):
                stack[-1] = (node, index + 1)
                child = children[index]
                if state.get(child) == 1:
                    cycle = [*path[path.index(child):], child]
                    raise InvalidSpec(f"Pipeline {pipeline!r} has a cycle: {' → '.join(cycle)}. A step cannot "
                                      "(directly or not) depend on its own outputs.")
                if state.get(child) != 2:
                    state[child] = 1
                    stack.append((child, 0))
                    path.append(child)
                continue
            stack.pop()
            path.pop()
            state[node] = 2
            order.append(node)
    return order
