"""The scheduler as a platform service: submit, list, cancel, retry, explain, logs, queues, usage, and the loop.

:class:`Scheduler` is what the SDK, the REST API and the CLI call. Jobs live in the catalog; the loop
(:meth:`Scheduler.start`, or :meth:`Scheduler.run_forever` in ``recplane jobs worker``) runs a
:class:`~recplane.scheduler.rounds.SchedulingRound` every interval while this process holds the leader lock, so
any number of servers can share a catalog and exactly one schedules. Jobs run detached from the loop (the local
backend's supervisors outlive it), so a restarted or failed-over scheduler picks them up where they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from recplane.auth import ADMIN, Principal
from recplane.catalog import Catalog
from recplane.catalog.tables import utcnow
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidInput, NotFound
from recplane.scheduler.admission import Resources
from recplane.scheduler.backends import JobBackend
from recplane.scheduler.kinds import job_kind, load_callable
from recplane.scheduler.leader import LeaderLock
from recplane.scheduler.records import (
    FINISHED_STATUSES,
    Job,
    JobExplanation,
    QueueInfo,
    UsageReport,
)
from recplane.scheduler.rounds import Backends, RoundReport, SchedulingRound, demand_of
from recplane.scheduler.spec import DEFAULT_QUEUE, JobSpec, QueueSpec, ResourceSpec, load_job_spec, load_queue_specs
from recplane.scheduler.store import JobStore, Transition, new_job_id, queue_info
from recplane.scheduler.usage import Prices, check_group_by, usage_report

__all__ = ["Scheduler"]

log = logging.getLogger("recplane.scheduler")
_LOG_POLL_SECONDS = 0.25


class Scheduler:
    """Jobs, queues and usage over one catalog, plus the scheduling loop."""

    def __init__(
        self, catalog: Catalog, settings: Settings, *, backends: dict[str, JobBackend] | None = None
    ) -> None:
        self.catalog, self.settings = catalog, settings
        self.store = JobStore(catalog)
        self.backends = Backends(settings, backends)
        self.rounds = SchedulingRound(self.store, self.backends, settings)
        self.leader = LeaderLock(catalog)
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, spec: JobSpec | dict[str, Any] | str | Path, *, principal: Principal = ADMIN) -> Job:
        """Validate a job spec (its kind's checks included) and queue it."""
        job_spec = load_job_spec(spec)
        if not principal.is_admin and job_spec.team == "default":
            job_spec = job_spec.model_copy(update={"team": principal.team})
        principal.require(job_spec.team, f"Team {job_spec.team!r}'s jobs")
        kind = job_kind(job_spec.kind)
        if kind.prepare is not None:
            job_spec = load_callable(kind.prepare)(job_spec)
        self._check_queue(job_spec)
        reason = f"submitted by {principal.name} to queue {job_spec.queue!r}"
        return self.store.add(new_job_id(), job_spec, created_by=principal.name, reason=reason)

    def _check_queue(self, spec: JobSpec) -> None:
        queue = self.store.queue(spec.queue)
        if queue is None:
            if spec.queue == DEFAULT_QUEUE:
                return
            raise NotFound(f"No queue {spec.queue!r}; create it with `recplane queues apply` (or omit `queue` to use "
                           f"the {DEFAULT_QUEUE!r} queue).")
        if spec.queue != DEFAULT_QUEUE and queue.team != spec.team:
            raise Forbidden(f"Queue {spec.queue!r} belongs to team {queue.team!r}; job is for team {spec.team!r}.")

    def get(self, job_id: str, *, principal: Principal = ADMIN) -> Job:
        """One job with its history."""
        job = self.store.get(job_id)
        principal.require(job.team, f"Job {job_id}")
        return job

    def list_jobs(
        self,
        *,
        principal: Principal = ADMIN,
        status: str | None = None,
        team: str | None = None,
        queue: str | None = None,
        kind: str | None = None,
        pipeline: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs this caller may see, newest first."""
        if team is not None:
            principal.require(team, f"Team {team!r}'s jobs")
        teams = [team] if team is not None else (None if principal.is_admin else [str(principal.team)])
        return self.store.find(teams=teams, status=status, queue=queue, kind=kind, pipeline=pipeline, limit=limit)

    def cancel(self, job_id: str, *, principal: Principal = ADMIN) -> Job:
        """Cancel a job: at once when queued; a running one is asked to stop (SIGTERM, then SIGKILL)."""
        job = self.get(job_id, principal=principal)
        if job.finished:
            return job
        reason = f"cancelled by {principal.name}"
        if self.store.apply([Transition(job_id, ("queued",), "cancelled", reason, {"finished_at": utcnow()})]):
            return self.store.get(job_id)
        if self.store.request_stop(job_id, "cancel", statuses=("admitted", "running")):
            self.store.note(job_id, job.status, f"{reason}; stopping it")
            record = self.store.record(job_id)
            backend = self.backends.get(record.backend)
            if backend is not None and record.status == "running":
                self.rounds.stop(record, backend, utcnow())
        return self.store.get(job_id)

    def retry(self, job_id: str, *, principal: Principal = ADMIN) -> Job:
        """Queue a failed or cancelled job again, with its retries reset."""
        job = self.get(job_id, principal=principal)
        fields = {"attempts": 0, "preempted_count": 0, "not_before": None, "finished_at": None, "exit_code": None,
                  "stop_requested": None, "stop_requested_at": None}
        reason = f"retried by {principal.name}"
        if not self.store.apply([Transition(job_id, ("failed", "cancelled"), "queued", reason, fields)]):
            raise InvalidInput(f"Job {job_id} is {job.status}; only failed or cancelled jobs can be retried.")
        return self.store.get(job_id)

    def explain(self, job_id: str, *, principal: Principal = ADMIN) -> JobExplanation:
        """Why the job is where it is, in plain words (for a queued job: what it waits for, who is ahead)."""
        job = self.get(job_id, principal=principal)
        if job.status != "queued":
            return JobExplanation(job_id=job.id, status=job.status, message=_status_story(job))
        hold = self.rounds.plan().held.get(job_id)
        if hold is None:
            message = "It fits now and starts at the next scheduling round"
            if not self._loop_running():
                message += " (run `recplane server` or `recplane jobs worker` if none is running)"
            return JobExplanation(job_id=job.id, status=job.status, message=message + ".")
        return JobExplanation(job_id=job.id, status=job.status, code=hold.code, message=hold.message,
                              ahead=hold.ahead)

    def _loop_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def logs(
        self, job_id: str, *, principal: Principal = ADMIN, follow: bool = False, offset: int = 0
    ) -> Iterator[str]:
        """The job's output from byte ``offset``; ``follow`` keeps reading until the job has finished."""
        self.get(job_id, principal=principal)
        while True:
            record = self.store.record(job_id)
            backend = self.backends.get(record.backend)
            text = ""
            if backend is not None and record.handle is not None:
                chunk = backend.logs(record.handle, offset)
                text, offset = chunk.text, chunk.next_offset
                if text:
                    yield text
            if not follow or (record.status in FINISHED_STATUSES and not text):
                return
            if not text:
                time.sleep(_LOG_POLL_SECONDS)

    def wait(self, job_id: str, *, principal: Principal = ADMIN, timeout: float | None = None) -> Job:
        """Block until the job finished (succeeded, failed for good, cancelled); TimeoutError past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id, principal=principal)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Job {job_id} is still {job.status} after {timeout:g} s.")
            time.sleep(min(0.2, self.settings.scheduler_interval_seconds))

    def apply_queues(
        self, specs: QueueSpec | dict[str, Any] | list[Any] | str | Path, *, principal: Principal = ADMIN
    ) -> list[QueueInfo]:
        """Create or update queues (administrators only: quotas are the platform team's to set)."""
        if not principal.is_admin:
            raise Forbidden("Only an administrator may create or change queues and quotas.")
        loaded = load_queue_specs(specs)
        for spec in loaded:
            if self.backends.get(spec.backend) is None:
                raise InvalidInput(f"Queue {spec.name!r} names backend {spec.backend!r}, which cannot be opened here.")
        for spec in loaded:
            self.store.apply_queue(spec)
        names = {spec.name for spec in loaded}
        return [queue for queue in self.list_queues() if queue.name in names]

    def list_queues(self) -> list[QueueInfo]:
        """Every queue with what it holds now (the implicit default queue too, once it has jobs)."""
        records = self.store.active()
        used: dict[str, Resources] = {}
        running: dict[str, int] = {}
        pending: dict[str, int] = {}
        for job in records:
            if job.status == "queued":
                pending[job.queue] = pending.get(job.queue, 0) + 1
            else:
                running[job.queue] = running.get(job.queue, 0) + 1
                used[job.queue] = used.get(job.queue, Resources()) + demand_of(job)
        queues = []
        for record in self.store.queues():
            amount = used.get(record.name, Resources())
            queues.append(queue_info(record, used=ResourceSpec(**amount.to_dict()), running=running.get(
                record.name, 0), pending=pending.get(record.name, 0)))
        if DEFAULT_QUEUE not in {queue.name for queue in queues} and (DEFAULT_QUEUE in used or DEFAULT_QUEUE in
                                                                      pending):
            default = self.rounds.default_queue()
            amount = used.get(DEFAULT_QUEUE, Resources())
            queues.append(QueueInfo(name=DEFAULT_QUEUE, team="default", nominal=default.nominal.to_dict(),
                                    used=ResourceSpec(**amount.to_dict()), running=running.get(DEFAULT_QUEUE, 0),
                                    pending=pending.get(DEFAULT_QUEUE, 0)))
        return queues

    def usage(
        self,
        *,
        principal: Principal = ADMIN,
        team: str | None = None,
        since: timedelta | datetime = timedelta(days=7),
        group_by: Sequence[str] = ("team",),
    ) -> UsageReport:
        """Usage from the ledger since a time (or for a window up to now), grouped and priced."""
        check_group_by(group_by)
        until = utcnow()
        start = until - since if isinstance(since, timedelta) else since
        if team is not None:
            principal.require(team, f"Team {team!r}'s usage")
        teams = [team] if team is not None else (None if principal.is_admin else [str(principal.team)])
        rows = self.store.usage_since(start, teams=teams)
        return usage_report(rows, since=start, until=until, group_by=group_by, prices=Prices.of(self.settings))

    def tick(self, now: datetime | None = None) -> RoundReport:
        """Run one scheduling round now (the loop calls this; tests and benchmarks may too)."""
        with self._tick_lock:
            return self.rounds.tick(now)

    def run_forever(self, interval: float | None = None, *, stop: threading.Event | None = None) -> None:
        """Schedule every ``interval`` seconds while this process leads, stand by while another does."""
        interval = self.settings.scheduler_interval_seconds if interval is None else interval
        stop = stop or self._stop
        try:
            while not stop.is_set():
                if self.leader.try_acquire():
                    try:
                        self.tick()
                    except Exception:  # a failed round must not end the loop: the next one retries
                        log.exception("scheduler round failed")
                stop.wait(interval)
        finally:
            self.leader.release()

    def start(self, interval: float | None = None) -> None:
        """Run the loop in a background thread (idempotent)."""
        if self._loop_running():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_forever, kwargs={"interval": interval}, name="recplane-scheduler", daemon=True
        )
        self._thread.start()

    @property
    def is_leader(self) -> bool:
        """Whether this process schedules now."""
        return self.leader.held

    def close(self) -> None:
        """Stop the loop (jobs keep running; the next leader picks them up)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.leader.release()


def _status_story(job: Job) -> str:
    """A non-queued job's situation in words, from its record and last event."""
    last = job.events[-1].reason if job.events else ""
    if job.status in ("running", "admitted"):
        where = f"on the {job.backend} backend" + (f" (pid {job.pid})" if job.pid else "")
        text = f"Running {where}, attempt {job.attempts} of up to {job.max_retries + 1}"
        text += ", on borrowed quota (it may be preempted if the lender needs it)" if job.borrowed else ""
        if job.stop_requested:
            text += f"; it is being stopped ({job.stop_requested})"
        return text + "."
    return f"{job.status.capitalize()}: {last}." if last else f"{job.status.capitalize()}."
