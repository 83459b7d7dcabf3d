"""One scheduling round: reconcile running jobs with their backends, plan admission, apply the plan.

:meth:`SchedulingRound.tick` is what the scheduler loop calls every interval (and what tests call directly):

1. **Reconcile.** Poll every running job's backend. Record exits (succeeded; failed, then retried with
   exponential backoff while retries are left; cancelled; preempted, then queued again to resume), write one
   usage-ledger row per ended attempt, stop jobs past their timeout, and kill jobs that outlived their grace.
2. **Plan.** Build a :class:`~recplane.scheduler.admission.ClusterSnapshot` from the catalog (queues and their
   budgets, running and queued jobs, backend capacities) and ask the pure planner.
3. **Apply.** Ask preempted jobs to stop (SIGTERM with a grace period), then admit and start the admitted jobs —
   status changes batched in one transaction each way.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from recplane.catalog.tables import JobRecord, QueueRecord, utcnow
from recplane.config import Settings
from recplane.errors import RecplaneError
from recplane.scheduler.admission import (
    AdmissionPlan,
    ClusterSnapshot,
    PendingJob,
    QueueState,
    Resources,
    RunningJob,
    plan_admission,
)
from recplane.scheduler.backends import JobBackend, Launch, ResourceUsage, open_backend
from recplane.scheduler.kinds import job_kind
from recplane.scheduler.spec import DEFAULT_QUEUE, BudgetSpec
from recplane.scheduler.store import JobStore, QueuedJob, Transition, UsageEntry, queue_spec_of
from recplane.scheduler.usage import Prices, budget_hold

__all__ = ["Backends", "RoundReport", "SchedulingRound"]

_MAX_BACKOFF_SECONDS = 3600.0
_KILL_MARGIN_SECONDS = 5.0  # past the grace period, the round kills what the supervisor did not


@dataclass
class RoundReport:
    """What one round did: jobs admitted and started, jobs that ended (and how), preemptions asked, holds."""

    admitted: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)
    preempted: list[str] = field(default_factory=list)
    held: int = 0
    seconds: float = 0.0


class Backends:
    """The job backends in use, opened on first use by name (a queue's ``backend``)."""

    def __init__(self, settings: Settings, given: Mapping[str, JobBackend] | None = None) -> None:
        self.settings = settings
        self._open: dict[str, JobBackend] = dict(given or {})
        self._broken: set[str] = set()

    def get(self, name: str | None) -> JobBackend | None:
        """The backend called ``name``, or None when it cannot be opened (its queues then hold their jobs)."""
        if name is None or name in self._broken:
            return None
        if name not in self._open:
            try:
                self._open[name] = open_backend(name, self.settings)
            except RecplaneError:
                self._broken.add(name)
                return None
        return self._open[name]

    def capacities(self, names: Sequence[str]) -> dict[str, Resources]:
        """Capacity of every backend named that can be opened."""
        found = {}
        for name in dict.fromkeys(names):
            backend = self.get(name)
            if backend is not None:
                found[name] = backend.capacity()
        return found


def _seconds(moment: datetime | None) -> float:
    return 0.0 if moment is None else moment.timestamp()


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC): make them aware again."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def demand_of(record: JobRecord) -> Resources:
    """Everything a job's gang holds once admitted."""
    return Resources(record.cpu, record.memory_gb, record.gpu).times(record.workers)


class SchedulingRound:
    """Runs rounds against one catalog and a set of backends."""

    def __init__(self, store: JobStore, backends: Backends, settings: Settings) -> None:
        self.store, self.backends, self.settings = store, backends, settings
        self.prices = Prices.of(settings)

    def default_queue(self) -> QueueState:
        """The implicit ``default`` queue until one is applied: the whole local machine, in no cohort."""
        capacity = self.backends.capacities(["local"]).get("local", Resources())
        return QueueState(DEFAULT_QUEUE, "default", capacity, backend="local")

    def queue_states(self, now: datetime) -> list[QueueState]:
        """Every queue as the planner sees it, budgets checked against the ledger."""
        states = [self._queue_state(record, now) for record in self.store.queues()]
        if all(state.name != DEFAULT_QUEUE for state in states):
            states.append(self.default_queue())
        return states

    def _queue_state(self, record: QueueRecord, now: datetime) -> QueueState:
        spec = queue_spec_of(record)
        hold = None
        if spec.budget is not None:
            hold = self._budget_hold(record, spec.budget, now)
        return QueueState(
            name=spec.name,
            team=spec.team,
            nominal=spec.nominal.to_resources(),
            cohort=spec.cohort,
            borrowing_limit=spec.borrowing_resources(),
            backend=spec.backend,
            strict_fifo=spec.strict_fifo,
            budget_hold=hold,
        )

    def _budget_hold(self, record: QueueRecord, budget: BudgetSpec, now: datetime) -> str | None:
        used = self.store.queue_usage_since(record.name, now - budget.window_delta)
        return budget_hold(record.name, record.team, budget, used, self.prices)

    def snapshot(self, holding: Sequence[JobRecord], queued: Sequence[QueuedJob], now: datetime) -> ClusterSnapshot:
        """The planner's view of the catalog now: jobs holding resources and jobs waiting."""
        queues = self.queue_states(now)
        capacity = self.backends.capacities([queue.backend for queue in queues])
        pending = [
            PendingJob(job.id, job.queue, job.priority, Resources(job.cpu, job.memory_gb, job.gpu), job.workers,
                       _seconds(_aware(job.created_at)), _seconds(_aware(job.not_before)))
            for job in queued
        ]
        running = [
            RunningJob(record.id, record.queue, record.priority, demand_of(record),
                       _seconds(_aware(record.admitted_at)), record.stop_requested is not None)
            for record in holding
        ]
        return ClusterSnapshot(queues, running, pending, capacity, now.timestamp())

    def plan(self, now: datetime | None = None) -> AdmissionPlan:
        """What a round would decide now (nothing is applied): explains why jobs wait."""
        now = now or utcnow()
        return plan_admission(self.snapshot(self.store.holding(), self.store.queued(), now))

    def tick(self, now: datetime | None = None) -> RoundReport:
        """One round: reconcile, plan, apply."""
        started = time.perf_counter()
        now = now or utcnow()
        report = RoundReport()
        holding = self.store.holding()
        if self._reconcile(holding, now, report):
            holding = self.store.holding()
        snapshot = self.snapshot(holding, self.store.queued(), now)
        plan = plan_admission(snapshot)
        self._preempt(plan, {record.id: record for record in holding}, now, report)
        backends = {queue.name: queue.backend for queue in snapshot.queues}
        self._admit_and_start(plan, backends, now, report)
        report.held = len(plan.held)
        report.seconds = time.perf_counter() - started
        return report

    def _reconcile(self, records: Sequence[JobRecord], now: datetime, report: RoundReport) -> bool:
        """Poll every admitted or running job's backend and record the attempts that ended, all in one
        transaction; True when some job's status changed."""
        requeue: list[Transition] = []
        ended: list[tuple[JobRecord, int, ResourceUsage]] = []
        for record in records:
            if record.status == "admitted":  # a round died between admitting and starting it: admit it afresh
                reason = "the scheduler stopped before starting it; it waits for admission again"
                requeue.append(Transition(record.id, ("admitted",), "queued", reason))
                continue
            backend = self.backends.get(record.backend)
            if record.status != "running" or backend is None or record.handle is None:
                continue
            status = backend.poll(record.handle)
            if status.running:
                if status.pid is not None and record.pid != status.pid:
                    self.store.set_fields(record.id, pid=status.pid)
                self._enforce_limits(record, backend, now)
                continue
            code = -9 if status.exit_code is None else status.exit_code
            ended.append((record, code, backend.usage(record.handle)))
        changes, usage = self._endings(ended, now, report)
        self.store.apply([*requeue, *changes], usage=usage)
        return bool(requeue or ended)

    def _enforce_limits(self, record: JobRecord, backend: JobBackend, now: datetime) -> None:
        """Send pending stop requests, stop jobs past their timeout, kill jobs that outlived their grace."""
        grace = self.settings.scheduler_grace_seconds
        if record.stop_requested is not None:
            asked = _aware(record.stop_requested_at)
            if asked is None:
                self.stop(record, backend, now)
            elif now - asked > timedelta(seconds=grace + _KILL_MARGIN_SECONDS):
                backend.cancel(record.handle or {}, grace_seconds=0)
            return
        started = _aware(record.started_at)
        limit = record.timeout_seconds
        if limit is None or started is None or now - started <= timedelta(seconds=limit):
            return
        if self.store.request_stop(record.id, "timeout", statuses=("running",)):
            self.store.note(record.id, "running", f"timed out after {limit:g} s; stopping it")
            self.stop(record, backend, now)

    def stop(self, record: JobRecord, backend: JobBackend, now: datetime) -> None:
        """Ask a running job's backend to stop it (SIGTERM, SIGKILL after the grace period)."""
        if record.handle is None:
            return
        backend.cancel(record.handle, grace_seconds=self.settings.scheduler_grace_seconds)
        self.store.set_fields(record.id, stop_requested_at=now)

    def _endings(
        self, ended: Sequence[tuple[JobRecord, int, ResourceUsage]], now: datetime, report: RoundReport
    ) -> tuple[list[Transition], list[UsageEntry]]:
        """How each ended attempt is recorded: its ledger row, then its status (and a retry or requeue)."""
        if not ended:
            return [], []
        # Read again: the jobs' own processes may have written their error or checkpoint since the round began.
        fresh = {r.id: r for r in self.store.records([r.id for r, _, _ in ended])}
        changes: list[Transition] = []
        usage: list[UsageEntry] = []
        for stale, code, used in ended:
            record = fresh.get(stale.id, stale)
            outcome = self._outcome(record, code)
            report.ended[record.id] = outcome
            usage.append(self._ledger_entry(record, outcome, used))
            changes.extend(self._ending(record, code, outcome, now))
        return changes, usage

    def _ending(self, record: JobRecord, code: int, outcome: str, now: datetime) -> list[Transition]:
        ended = {"exit_code": code, "finished_at": now, "stop_requested": None, "stop_requested_at": None}
        if outcome == "succeeded":
            return [Transition(record.id, ("running",), "succeeded", "exited with code 0", {**ended, "error": None})]
        if outcome == "cancelled":
            return [Transition(record.id, ("running",), "cancelled", f"cancelled; {_exit_text(code)}", ended)]
        if outcome == "preempted":
            return self._requeue_preempted(record, code, ended)
        return self._fail(record, code, ended, now)

    @staticmethod
    def _outcome(record: JobRecord, code: int) -> str:
        if code == 0:
            return "succeeded"  # it finished before the stop request reached it
        if record.stop_requested in ("cancel", "preempt"):
            return "cancelled" if record.stop_requested == "cancel" else "preempted"
        return "failed"

    def _ledger_entry(self, record: JobRecord, outcome: str, usage: ResourceUsage) -> UsageEntry:
        return UsageEntry(
            job_id=record.id,
            attempt=record.attempts,
            team=record.team,
            queue=record.queue,
            kind=record.kind,
            pipeline=record.pipeline,
            outcome=outcome,
            cpu_seconds=usage.cpu_seconds,
            gpu_seconds=record.gpu * record.workers * usage.wall_seconds,
            memory_gb_seconds=usage.memory_gb_seconds,
            wall_seconds=usage.wall_seconds,
            peak_memory_gb=usage.peak_memory_gb,
        )

    @staticmethod
    def _requeue_preempted(record: JobRecord, code: int, ended: dict[str, Any]) -> list[Transition]:
        resume = f"resumes from checkpoint {record.checkpoint}" if record.checkpoint else "starts over"
        return [
            Transition(record.id, ("running",), "preempted", f"stopped after preemption; {_exit_text(code)}",
                       {**ended, "preempted_count": record.preempted_count + 1, "pid": None}),
            Transition(record.id, ("preempted",), "queued", f"queued again; it {resume} when admitted",
                       {"finished_at": None}),
        ]

    @staticmethod
    def _fail(record: JobRecord, code: int, ended: dict[str, Any], now: datetime) -> list[Transition]:
        error = _error_text(record, code)
        failures = record.attempts - record.preempted_count
        changes = [Transition(record.id, ("running",), "failed", error, {**ended, "error": error, "pid": None})]
        if failures <= record.max_retries:
            delay = min(record.backoff_seconds * 2 ** (failures - 1), _MAX_BACKOFF_SECONDS)
            changes.append(Transition(
                record.id, ("failed",), "queued",
                f"retry {failures} of {record.max_retries} after a {delay:g} s backoff",
                {"not_before": now + timedelta(seconds=delay), "finished_at": None},
            ))
        return changes

    def _preempt(self, plan: AdmissionPlan, by_id: dict[str, JobRecord], now: datetime, report: RoundReport) -> None:
        for preemption in plan.preempted:
            record = by_id.get(preemption.job_id)
            if record is None or not self.store.request_stop(record.id, "preempt", statuses=("running", "admitted")):
                continue
            self.store.note(record.id, record.status, preemption.reason)
            report.preempted.append(record.id)
            backend = self.backends.get(record.backend)
            if backend is not None and record.status == "running":
                self.stop(record, backend, now)

    def _admit_and_start(
        self, plan: AdmissionPlan, backends: dict[str, str], now: datetime, report: RoundReport
    ) -> None:
        admissions = [
            Transition(a.job_id, ("queued",), "admitted", a.reason,
                       {"admitted_at": now, "borrowed": not a.borrowed.is_zero(), "backend": backends[a.queue],
                        "not_before": None})
            for a in plan.admitted
        ]
        admitted = self.store.apply(admissions)
        report.admitted.extend(admitted)
        starts: list[Transition] = []
        records = {record.id: record for record in self.store.records(admitted)}  # full: spec, env, attempts
        for job_id in admitted:  # in admission order
            starts.extend(self._start(records[job_id], backends[records[job_id].queue], now))
        report.started.extend(self.store.apply(starts))

    def _start(self, record: JobRecord, backend_name: str, now: datetime) -> list[Transition]:
        """Launch an admitted job on its backend; the transitions that record how that went."""
        backend = self.backends.get(backend_name)
        attempt = record.attempts + 1
        try:
            if backend is None:
                raise RecplaneError(f"backend {backend_name!r} cannot be opened")
            handle = backend.submit(self._launch(record, attempt))
        except (RecplaneError, OSError) as exc:
            error = f"could not start on backend {backend_name!r}: {exc}"
            return [Transition(record.id, ("admitted",), "failed", error,
                               {"attempts": attempt, "error": error, "finished_at": now})]
        return [Transition(
            record.id, ("admitted",), "running", f"attempt {attempt} started on the {backend_name} backend",
            {"attempts": attempt, "started_at": now, "handle": handle, "pid": None, "exit_code": None,
             "finished_at": None, "error": None},
        )]

    def _launch(self, record: JobRecord, attempt: int) -> Launch:
        kind = job_kind(record.kind)
        command = (record.spec or {}).get("command")
        argv = list(command) if command else [sys.executable, "-m", "recplane.scheduler.entrypoint", record.id]
        processes = record.workers if command or not kind.launches_workers else 1
        # Launch.resources are per process: a kind that starts its own N workers runs them all inside the one
        # process the backend starts, so that process reserves (Ray), requests (Kubernetes) and is billed for N.
        per_worker = Resources(record.cpu, record.memory_gb, record.gpu)
        resources = per_worker if processes == record.workers else per_worker.times(record.workers)
        threads = str(max(1, math.floor(record.cpu)))  # per worker: each spawned worker inherits the variable
        env = {
            "OMP_NUM_THREADS": threads,  # a job gets the CPUs it asked for, not every core of the machine
            "MKL_NUM_THREADS": threads,
            **{key: str(value) for key, value in (record.env or {}).items()},
            "RECPLANE_HOME": str(self.settings.home.resolve()),
            "RECPLANE_DATABASE_URL": self.settings.catalog_url,
            "RECPLANE_LAKE_URI": self.settings.lake_root,
            "RECPLANE_ONLINE_STORE": self.settings.online_store,
            "RECPLANE_SCHEDULER_LOOP": "false",
            "RECPLANE_JOB_ID": record.id,
            "RECPLANE_JOB_ATTEMPT": str(attempt),
        }
        return Launch(
            job_id=record.id,
            attempt=attempt,
            argv=argv,
            env=env,
            resources=resources,
            processes=processes,
            grace_seconds=self.settings.scheduler_grace_seconds,
            cwd=os.getcwd(),
            labels={"team": record.team, "queue": record.queue, "kind": record.kind},
            timeout_seconds=record.timeout_seconds,
        )


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"


def _error_text(record: JobRecord, code: int) -> str:
    if record.stop_requested == "timeout":
        return f"timed out after {record.timeout_seconds:g} s ({_exit_text(code)})"
    detail = f": {record.error}" if record.error else ""  # written by the job's process as it failed
    return f"attempt {record.attempts} {_exit_text(code)}{detail}"
