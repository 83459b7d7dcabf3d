"""The job backend interface: where job processes actually run (this machine, a Ray cluster, Kubernetes).

The scheduler decides *what* runs and *when*; a backend only starts, watches, stops and measures processes. It
keeps no state the scheduler needs beyond the JSON ``handle`` it returns from :meth:`JobBackend.submit`, which
the scheduler stores in the catalog, so a restarted control plane picks up running jobs from their handles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from recplane.scheduler.admission import Resources

__all__ = ["BackendStatus", "JobBackend", "Launch", "LogChunk", "ResourceUsage"]


@dataclass(frozen=True)
class Launch:
    """One attempt of a job to start: the command, its environment, and the gang it forms.

    ``processes``: how many copies the backend starts (ranks ``0..processes-1``, told by ``RECPLANE_WORKER_RANK``
    and ``RECPLANE_WORKERS``); 1 for kinds that start their own workers (data-parallel training).
    ``resources`` are per process. ``grace_seconds``: how long a stop request waits before it kills.
    """

    job_id: str
    attempt: int
    argv: list[str]
    env: dict[str, str]
    resources: Resources
    processes: int = 1
    grace_seconds: float = 30.0
    cwd: str | None = None
    # Who the attempt is for (team, queue, kind) and its time limit: backends that create cluster objects tag
    # them with the labels and set the limit as a safety net (the scheduler enforces the timeout itself).
    labels: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class ResourceUsage:
    """What an attempt consumed so far: measured CPU seconds, memory GB-seconds and peak memory, wall time."""

    cpu_seconds: float = 0.0
    memory_gb_seconds: float = 0.0
    peak_memory_gb: float = 0.0
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class BackendStatus:
    """Where an attempt stands. ``exit_code`` is set once it ended (negative: killed by that signal)."""

    running: bool
    exit_code: int | None = None
    pid: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogChunk:
    """Log text from ``offset`` on, and the offset to ask for next."""

    text: str
    next_offset: int


@runtime_checkable
class JobBackend(Protocol):
    """Starts job attempts and reports on them. Implementations: local (subprocesses); Ray and Kubernetes next."""

    name: str

    def capacity(self) -> Resources:
        """What this backend can run at once (the admission planner never goes over it)."""
        ...

    def submit(self, launch: Launch) -> dict[str, Any]:
        """Start an attempt; returns its handle (JSON), stored by the scheduler and passed to the other methods."""
        ...

    def poll(self, handle: dict[str, Any]) -> BackendStatus:
        """Is the attempt still running, and if not, how did it end."""
        ...

    def cancel(self, handle: dict[str, Any], *, grace_seconds: float) -> None:
        """Ask the attempt to stop (SIGTERM or the backend's equivalent), killing it after ``grace_seconds``."""
        ...

    def logs(self, handle: dict[str, Any], offset: int = 0) -> LogChunk:
        """The job's captured output from byte ``offset`` on."""
        ...

    def usage(self, handle: dict[str, Any]) -> ResourceUsage:
        """What the attempt has consumed (final once it ended)."""
        ...
