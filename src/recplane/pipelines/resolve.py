"""Turning a step's ``with`` into the values it runs on, and its cache key — shared by the runner and the jobs.

Inputs are resolved from params and upstream outputs; a dataset reference without a version (or a dataset name
given for a ``DatasetRef`` parameter) is pinned to the dataset's newest version at that moment, so the step, its
record and its cache key all name the exact data it reads.
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable, Mapping
from typing import Any

from recplane.pipelines.cache import cache_key, code_identity
from recplane.pipelines.dag import resolve_value
from recplane.pipelines.refs import DatasetRef, encode_value, ref_type_of
from recplane.pipelines.spec import StepSpec, resolve_function

__all__ = ["CodeDigests", "dataset_parameters", "prepare_step", "takes_context"]

DatasetVersion = Callable[[str], int]


class CodeDigests:
    """Step functions' code digests, recomputed when a function's source file changes."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[float, str]] = {}

    def __call__(self, uses: str) -> str:
        function = resolve_function(uses)
        source = getattr(getattr(function, "__code__", None), "co_filename", "")
        try:
            stamp = os.stat(source).st_mtime if source else 0.0
        except OSError:
            stamp = 0.0
        known = self._known.get(uses)
        if known is None or known[0] != stamp:
            known = self._known[uses] = (stamp, code_identity(function))
        return known[1]


@functools.lru_cache(maxsize=1024)
def dataset_parameters(function: Any) -> list[str]:
    """The parameters of a step function annotated as a ``DatasetRef``."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: no conversions
        return []
    return [name for name, hint in hints.items() if name != "return" and ref_type_of(hint) == "dataset"]


@functools.lru_cache(maxsize=1024)
def takes_context(function: Any) -> bool:
    """Whether the step function asks for its :class:`StepContext` (and so may read every param)."""
    try:
        return "context" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _pin(value: Any, dataset_version: DatasetVersion | None) -> Any:
    if isinstance(value, dict):
        if value.get("$ref") == "dataset" and value.get("version") is None and dataset_version is not None:
            return {**value, "version": dataset_version(str(value["name"]))}
        return {key: _pin(item, dataset_version) for key, item in value.items()}
    if isinstance(value, list):
        return [_pin(item, dataset_version) for item in value]
    return value


def prepare_step(
    item: StepSpec,
    *,
    pipeline: str,
    params: Mapping[str, Any],
    outputs: Mapping[str, Any],
    code: Callable[[str], str],
    dataset_version: DatasetVersion | None,
) -> tuple[dict[str, Any], str]:
    """``(inputs, cache key)`` of a step whose upstream ``outputs`` are known."""
    function = resolve_function(item.uses)
    resolved = dict(resolve_value(item.with_, params, outputs))
    for name in dataset_parameters(function):  # "ratings" given for a DatasetRef input: a reference to pin
        if isinstance(resolved.get(name), str):
            resolved[name] = encode_value(DatasetRef.parse(resolved[name]))
    inputs = dict(_pin(resolved, dataset_version))
    seen = dict(params) if takes_context(function) else None
    return inputs, cache_key(pipeline=pipeline, step=item.name, code=code(item.uses), inputs=inputs, params=seen)
