"""Why a job waits, in plain words: each hold code of the admission planner, with its facts, as a sentence.

The planner records a stable code and the numbers behind it (:class:`~recplane.scheduler.admission.Hold`); this
module turns them into what `recplane jobs explain` prints, only when someone asks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from recplane.scheduler.resources import RESOURCES, Resources

__all__ = ["AHEAD_SHOWN", "HoldCode", "describe_amount", "describe_hold"]

_UNITS = {"cpu": "CPU", "memory_gb": "GB memory", "gpu": "GPU"}
_EPSILON = 1e-9
AHEAD_SHOWN = 3

HoldCode = Literal[
    "no_queue", "no_backend", "backoff", "budget", "too_big", "strict_fifo", "quota", "borrow_limit", "capacity",
    "releasing", "reclaiming",
]


def describe_amount(amount: Resources, *, workers: int = 1) -> str:
    """``2 CPU, 4 GB memory``; for a gang, ``4 CPU, 8 GB memory at once (2 workers of 2 CPU, 4 GB memory)``."""
    text = _amount(amount)
    if workers > 1:
        text += f" at once ({workers} workers of {_amount(amount.times(1 / workers))})"
    return text


def _amount(amount: Resources) -> str:
    parts = [f"{_number(getattr(amount, name))} {_UNITS[name]}" for name in RESOURCES if getattr(amount, name)]
    return ", ".join(parts) or "no resources"


def _number(value: float) -> str:
    return f"{value:.0f}" if math.isclose(value, round(value), abs_tol=1e-9) else f"{value:.2f}".rstrip("0")


def _one(value: float, resource: str) -> str:
    return f"{_number(value)} {_UNITS[resource]}"


def _usage(used: float, nominal: float, resource: str) -> str:
    """``4/4 CPU``, or ``6/4 CPU (2 borrowed)`` past the nominal quota."""
    text = f"{_number(used)}/{_one(nominal, resource)}"
    return text if used <= nominal + _EPSILON else f"{text} ({_number(used - nominal)} borrowed)"


def describe_hold(code: HoldCode, facts: Mapping[str, Any]) -> str:
    describe = _DESCRIPTIONS[code]
    return describe(facts)


def _no_queue(f: Mapping[str, Any]) -> str:
    return f"Queue {f['queue']!r} does not exist; create it with `recplane queues apply`"


def _no_backend(f: Mapping[str, Any]) -> str:
    return f"Queue {f['queue']!r} runs on backend {f['backend']!r}, which reports no capacity"


def _backoff(f: Mapping[str, Any]) -> str:
    at = datetime.fromtimestamp(f["not_before"], UTC).strftime("%H:%M:%S UTC")
    return f"Its last attempt failed; it retries after a backoff, not before {at} (in {f['wait']:.0f} s)"


def _budget(f: Mapping[str, Any]) -> str:
    return str(f["reason"])


def _too_big(f: Mapping[str, Any]) -> str:
    need = f"It needs {describe_amount(f['demand'], workers=f['workers'])}"
    if f["limit"] == "capacity":
        return f"{need}, but the {f['backend']} backend has only {_one(f['have'], f['resource'])} in total"
    return (
        f"{need}, but queue {f['queue']!r} can never use more than {_one(f['have'], f['resource'])} "
        f"({f['limit']})"
    )


def _strict_fifo(f: Mapping[str, Any]) -> str:
    return f"Queue {f['queue']!r} is strict FIFO and job {f['blocker']} at its head cannot be admitted yet"


def _quota(f: Mapping[str, Any]) -> str:
    resource = f["resource"]
    used = f"{f['team']}'s queue {f['queue']!r} uses {_usage(f['used'], f['nominal'], resource)}"
    need = f"it needs {describe_amount(f['demand'], workers=f['workers'])}"
    if f["cohort"] is None:
        return f"{used} of its nominal quota and is in no cohort, so it cannot borrow; {need}"
    return (
        f"{used} of its nominal quota and cohort {f['cohort']!r} has {_one(f['idle'], resource)} idle to "
        f"borrow; {need}"
    )


def _borrow_limit(f: Mapping[str, Any]) -> str:
    resource = f["resource"]
    return (
        f"{f['team']}'s queue {f['queue']!r} uses {_usage(f['used'], f['nominal'], resource)} of its "
        f"nominal quota; admitting it would mean borrowing {_one(f['borrow'], resource)}, over the queue's "
        f"borrowing limit of {_one(f['limit'], resource)}"
    )


def _capacity(f: Mapping[str, Any]) -> str:
    resource = f["resource"]
    return (
        f"The {f['backend']} backend has {_number(f['free'])}/{_one(f['capacity'], resource)} free; it needs "
        f"{describe_amount(f['demand'], workers=f['workers'])}"
    )


def _releasing(f: Mapping[str, Any]) -> str:
    jobs = f["jobs"]
    return (
        f"Its queue {f['queue']!r} has the nominal quota for it; waiting for {len(jobs)} stopping "
        f"job{'s' if len(jobs) != 1 else ''} ({', '.join(jobs[:AHEAD_SHOWN])}) to release their resources"
    )


def _reclaiming(f: Mapping[str, Any]) -> str:
    victims = f["victims"]
    return (
        f"Its queue {f['queue']!r} needs its nominal quota back: preempting {len(victims)} job"
        f"{'s' if len(victims) != 1 else ''} running on borrowed quota ({', '.join(victims[:AHEAD_SHOWN])}); "
        "it starts when they have stopped"
    )


_DESCRIPTIONS = {
    "no_queue": _no_queue,
    "no_backend": _no_backend,
    "backoff": _backoff,
    "budget": _budget,
    "too_big": _too_big,
    "strict_fifo": _strict_fifo,
    "quota": _quota,
    "borrow_limit": _borrow_limit,
    "capacity": _capacity,
    "releasing": _releasing,
    "reclaiming": _reclaiming,
}
