"""What a job's own process gets: its job record, settings, the platform (on first use) and a stop flag.

The job process talks to the catalog like any SDK user; the only columns of its job it writes are ``checkpoint``
(where to resume from after a preemption) and ``result`` (what it produced, JSON).
"""

from __future__ import annotations

import os
import signal
import threading
from functools import cached_property
from types import FrameType
from typing import TYPE_CHECKING, Any

from recplane.auth import ADMIN, Principal
from recplane.config import Settings
from recplane.scheduler.records import Job

if TYPE_CHECKING:
    from recplane.runtime import Runtime
    from recplane.scheduler.store import JobStore

__all__ = ["JobContext", "JobStopped"]


class JobStopped(Exception):
    """Raised inside a job that was asked to stop (preempted, cancelled, timed out) once it saved its state."""


class JobContext:
    """One running attempt of a job, as its process sees it."""

    def __init__(self, job: Job, settings: Settings, store: JobStore) -> None:
        self.job = job
        self.settings = settings
        self.store = store
        self.attempt = int(os.environ.get("RECPLANE_JOB_ATTEMPT", job.attempts or 1))
        self.rank = int(os.environ.get("RECPLANE_WORKER_RANK", "0"))
        self.workers = int(os.environ.get("RECPLANE_WORKERS", "1"))
        self.stop_requested = threading.Event()

    def watch_stop_signal(self) -> None:
        """Turn SIGTERM into :attr:`stop_requested` instead of ending the process (for kinds that save state)."""

        def requested(_signum: int, _frame: FrameType | None) -> None:
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, requested)

    @property
    def principal(self) -> Principal:
        """Who the job acts as: its team, or the administrator for jobs the administrator submitted."""
        return ADMIN if self.job.created_by == ADMIN.name else Principal(team=self.job.team)

    @cached_property
    def runtime(self) -> Runtime:
        """The platform in this process (catalog, datasets, training ...), opened on first use."""
        from recplane.runtime import Runtime

        return Runtime(self.settings)

    def record_checkpoint(self, location: str) -> None:
        """Remember where this job can resume from (a checkpoint file); read back on its next attempt."""
        self.store.set_fields(self.job.id, checkpoint=location)
        self.job = self.job.model_copy(update={"checkpoint": location})

    def record_result(self, result: dict[str, Any]) -> None:
        """Store what the job produced (JSON)."""
        self.store.set_fields(self.job.id, result=result)

    def close(self) -> None:
        """Release the platform if it was opened."""
        if "runtime" in self.__dict__:
            self.runtime.close()
