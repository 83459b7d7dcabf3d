"""Content-addressed step caching: a key from the step's code, its resolved inputs and (if it can see them) params.

The code part is a hash of the function's source text (so an edit changes it), or, where the source cannot be
read (compiled or built-in code), its module and the package version. Inputs are resolved first, so a
``DatasetRef`` carries the exact version the step will read: new data means a new key.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["cache_key", "code_identity"]


def _package_version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.split(".")[0])
    except (PackageNotFoundError, ValueError):
        return "unknown"


def code_identity(function: Callable[..., Any]) -> str:
    """A digest that changes when the function's code does."""
    target = inspect.unwrap(function)
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        module = getattr(target, "__module__", "?")
        text = f"{module}:{getattr(target, '__qualname__', target)}@{_package_version(module)}"
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(*, pipeline: str, step: str, code: str, inputs: Any, params: Mapping[str, Any] | None) -> str:
    """The step cache key (64 hex digits); ``params`` only for steps that read params through their context."""
    payload = {"pipeline": pipeline, "step": step, "code": code, "inputs": inputs, "params": params}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
