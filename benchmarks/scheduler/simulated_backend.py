"""A simulated job backend for the scheduler benchmark, in the spirit of Kubernetes' KWOK: nothing is executed.

Each attempt "runs" for a set number of polls (one poll per scheduling round) and then exits 0, or -15 once it was
asked to stop. It implements the same :class:`~recplane.scheduler.backends.JobBackend` protocol as the local
backend, so the scheduler's real rounds, catalog writes and ledger run unchanged; only process start-up is left
out — that is measured separately by the ``local_job_overhead`` case with real processes.
"""

from __future__ import annotations

from typing import Any

from recplane.scheduler.admission import Resources
from recplane.scheduler.backends.protocol import BackendStatus, Launch, LogChunk, ResourceUsage


class SimulatedBackend:
    """Attempts that last ``rounds_of[job_id]`` polls."""

    name = "simulated"

    def __init__(self, capacity: Resources, rounds_of: dict[str, int]) -> None:
        self._capacity = capacity
        self.rounds_of = rounds_of
        self.polls: dict[str, int] = {}
        self.stopped: set[str] = set()
        self.submitted = 0

    def capacity(self) -> Resources:
        return self._capacity

    def submit(self, launch: Launch) -> dict[str, Any]:
        key = f"{launch.job_id}/{launch.attempt}"
        self.polls[key] = 0
        self.submitted += 1
        return {"key": key, "rounds": self.rounds_of.get(launch.job_id, 1), "cpu": launch.resources.cpu}

    def poll(self, handle: dict[str, Any]) -> BackendStatus:
        key = handle["key"]
        self.polls[key] += 1
        if key in self.stopped:
            return BackendStatus(running=False, exit_code=-15)
        if self.polls[key] < handle["rounds"]:
            return BackendStatus(running=True)
        return BackendStatus(running=False, exit_code=0)

    def cancel(self, handle: dict[str, Any], *, grace_seconds: float) -> None:
        self.stopped.add(handle["key"])

    def logs(self, handle: dict[str, Any], offset: int = 0) -> LogChunk:
        return LogChunk("", offset)

    def usage(self, handle: dict[str, Any]) -> ResourceUsage:
        seconds = float(self.polls.get(handle["key"], 0))
        return ResourceUsage(cpu_seconds=seconds * handle["cpu"], wall_seconds=seconds)
