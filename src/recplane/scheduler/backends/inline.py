"""The inline backend: job attempts run in a long-lived worker thread pool of the process that schedules them.

For light work (pipeline bookkeeping steps, no-op steps, quick checks) starting a Python process per attempt
costs far more than the work. A queue with ``backend: inline`` runs its jobs' entrypoints in this process's
threads instead: the same job records, admission, retries and usage ledger, without a process start. What it
gives up, said plainly: a running attempt cannot be killed (cancel sets the job's stop flag, which the job may
honour), CPU is measured per thread (``thread_time``) and memory is not measured, output is not captured (the
log holds the attempt's start, end and traceback), and an attempt dies with its process — when another process
polls its handle it reads as lost (exit code -9), like a local job whose supervisor vanished.

Listeners registered with :meth:`InlineBackend.add_listener` are called as each attempt ends, so a loop in the
same process can react at once instead of at its next interval.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from recplane.config import Settings
from recplane.scheduler.admission import Resources
from recplane.scheduler.backends.protocol import BackendStatus, Launch, LogChunk, ResourceUsage

__all__ = ["InlineBackend", "from_settings"]

_LOST = -9
_FORGET_AFTER_SECONDS = 3600.0


@dataclass
class _Attempt:
    done: threading.Event = field(default_factory=threading.Event)
    exit_code: int | None = None
    cpu_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    wall_seconds: float = 0.0
    stop: threading.Event | None = None


class InlineBackend:
    """Runs job entrypoints in ``threads`` worker threads of this process."""

    name = "inline"

    def __init__(self, settings: Settings, *, threads: int = 4) -> None:
        self.settings = settings
        self.threads = threads
        self.root = settings.home.resolve() / "jobs"
        self.worker = uuid.uuid4().hex  # names this process's pool: handles from another process read as lost
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="recplane-inline")
        self._attempts: dict[str, _Attempt] = {}
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._store: Any = None
        self._capacity = Resources(float(threads), psutil.virtual_memory().total / 1e9, 0.0)

    def capacity(self) -> Resources:
        """As many CPUs as worker threads, and the machine's memory (shared with this process, not reserved)."""
        return self._capacity

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (no arguments, from a worker thread) whenever an attempt ends."""
        with self._lock:
            self._listeners.append(listener)

    def submit(self, launch: Launch) -> dict[str, Any]:
        """Queue the attempt on the pool; returns its handle."""
        key = f"{launch.job_id}/{launch.attempt}"
        attempt = _Attempt()
        with self._lock:
            self._forget_old()
            self._attempts[key] = attempt
        log = self.root / launch.job_id / "log"
        self._pool.submit(self._run, launch, attempt, log)
        return {"worker": self.worker, "key": key, "log": str(log)}

    def _forget_old(self) -> None:
        """Drop attempts that ended long ago (the scheduler recorded them within a round or two)."""
        horizon = time.monotonic() - _FORGET_AFTER_SECONDS
        for key, attempt in list(self._attempts.items()):
            if attempt.done.is_set() and attempt.started + attempt.wall_seconds < horizon:
                del self._attempts[key]

    def _job_store(self) -> Any:
        with self._lock:
            if self._store is None:
                from recplane.catalog import Catalog
                from recplane.scheduler.store import JobStore

                self._store = JobStore(Catalog(self.settings.catalog_url))
            return self._store

    def _run(self, launch: Launch, attempt: _Attempt, log: Path) -> None:
        from recplane.scheduler.context import JobContext, JobStopped
        from recplane.scheduler.kinds import job_kind, load_callable

        started_cpu = time.thread_time()
        log.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"--- attempt {launch.attempt} started inline {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n"]
        code = 1
        context = None
        try:
            store = self._job_store()
            job = store.get(launch.job_id)
            context = JobContext(job, self.settings, store)
            context.attempt = launch.attempt  # the process environment is the scheduler's, not the attempt's
            attempt.stop = context.stop_requested
            result = load_callable(job_kind(job.kind).runner)(context)
            if result is not None:
                context.record_result(result)
            code = 0
        except JobStopped as stopped:
            lines.append(f"recplane: {stopped}\n")
            code = 143
        except Exception as exc:  # the job's own failure: its traceback is what the log is for
            lines.append(traceback.format_exc())
            summary = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1]
            try:
                self._job_store().set_fields(launch.job_id, error=summary[:2000])
            except Exception:  # the catalog itself failed: the exit code still tells
                lines.append("recplane: could not record the error in the catalog\n")
        finally:
            if context is not None:
                context.close()
            lines.append(f"--- attempt {launch.attempt} exited with code {code} ---\n")
            with log.open("a") as out:
                out.writelines(lines)
            attempt.cpu_seconds = time.thread_time() - started_cpu
            attempt.wall_seconds = time.monotonic() - attempt.started
            attempt.exit_code = code
            attempt.done.set()
            self._notify()

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def _attempt(self, handle: dict[str, Any]) -> _Attempt | None:
        if handle.get("worker") != self.worker:
            return None
        with self._lock:
            return self._attempts.get(str(handle.get("key")))

    def poll(self, handle: dict[str, Any]) -> BackendStatus:
        """Running until the thread finished; an attempt of another (dead or other) process reads as lost."""
        attempt = self._attempt(handle)
        if attempt is None:
            return BackendStatus(running=False, exit_code=_LOST, detail={"lost": True})
        if not attempt.done.is_set():
            return BackendStatus(running=True)
        return BackendStatus(running=False, exit_code=attempt.exit_code)

    def cancel(self, handle: dict[str, Any], *, grace_seconds: float) -> None:
        """Set the job's stop flag (a thread cannot be killed; jobs that check the flag stop)."""
        attempt = self._attempt(handle)
        if attempt is not None and attempt.stop is not None:
            attempt.stop.set()

    def logs(self, handle: dict[str, Any], offset: int = 0) -> LogChunk:
        """Bytes ``offset..`` of the job's log file."""
        path = Path(handle["log"])
        if not path.is_file():
            return LogChunk("", offset)
        with path.open("rb") as log:
            log.seek(offset)
            data = log.read()
        return LogChunk(data.decode("utf-8", errors="replace"), offset + len(data))

    def usage(self, handle: dict[str, Any]) -> ResourceUsage:
        """Thread CPU seconds and wall time of the attempt (memory is not measured per thread)."""
        attempt = self._attempt(handle)
        if attempt is None:
            return ResourceUsage()
        wall = attempt.wall_seconds if attempt.done.is_set() else time.monotonic() - attempt.started
        return ResourceUsage(cpu_seconds=attempt.cpu_seconds, wall_seconds=wall)



def from_settings(settings: Settings) -> InlineBackend:
    """The inline backend of this process, sized by ``settings.inline_worker_threads``."""
    return InlineBackend(settings, threads=settings.inline_worker_threads)
