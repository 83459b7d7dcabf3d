"""The admission planner: which queued jobs start now, which borrowed work is reclaimed, and why the rest wait.

A pure function over plain data (:func:`plan_admission`): no catalog, no processes, no clock. The scheduler
builds a :class:`ClusterSnapshot` (queues with their quotas, running jobs, pending jobs, backend capacity) each
round and applies the :class:`AdmissionPlan` it gets back.

The policy, after Kueue's ClusterQueue/cohort model:

* **Quotas.** Each queue has a *nominal* quota per resource (cpu, memory_gb, gpu). Queues in the same cohort
  lend each other idle nominal quota: a queue may use up to its nominal quota plus its borrowing limit, as
  long as the cohort as a whole stays within the sum of its members' nominal quotas. A backend never runs
  more than its capacity, whatever the quotas say.
* **Order.** Within a queue: priority first, then submit time (FIFO), then id. Across queues: dominant-resource
  fairness — the queue with the lowest dominant share (its largest ``usage / capacity`` over resources) admits
  next. Admissions within nominal quota happen before any borrowing (pass 1, then pass 2), so borrowing never
  takes what a queue entitled to it could use in the same round.
* **Gang admission.** A job with ``workers = N`` needs N times its resources at once: all or nothing.
* **Reclaim.** When a job fits its queue's free nominal quota but the cohort or the backend is full because
  other queues borrowed, the planner preempts borrowed work — jobs of queues in the cohort that use more than
  their nominal quota, lowest priority first, newest first — just enough to fit it. Nominal quota is a
  guarantee. Preempted jobs keep their resources until they exit, so the job waits (its quota reserved against
  other borrowers) until they do.
* **Holds.** Every job left waiting gets a :class:`Hold`: a reason in plain words, and the jobs ahead of it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from recplane.scheduler.reasons import AHEAD_SHOWN, HoldCode, describe_amount, describe_hold
from recplane.scheduler.resources import RESOURCES, ZERO, Resources

__all__ = [
    "RESOURCES",
    "Admission",
    "AdmissionPlan",
    "ClusterSnapshot",
    "Hold",
    "HoldCode",
    "PendingJob",
    "Preemption",
    "QueueState",
    "Resources",
    "RunningJob",
    "describe_amount",
    "plan_admission",
]

_ONE_CPU_ONE_GB = Resources(1.0, 1.0, 0.0)


@dataclass(frozen=True, slots=True)
class QueueState:
    """A queue as the planner sees it. ``borrowing_limit=None``: may borrow any idle quota of its cohort.

    ``budget_hold``: set (to the reason, in words) when the queue's team is over its usage budget for the window;
    its jobs then wait whatever the quotas say.
    """

    name: str
    team: str
    nominal: Resources
    cohort: str | None = None
    borrowing_limit: Resources | None = None
    backend: str = "local"
    strict_fifo: bool = False
    budget_hold: str | None = None

    @property
    def cohort_key(self) -> str:
        """The cohort, or a private one for a queue in none (it can then lend and borrow nothing)."""
        return self.cohort if self.cohort is not None else f"\0{self.name}"


class RunningJob(NamedTuple):  # a tuple: a round builds thousands of these
    """A job holding resources: running, or admitted and starting. ``resources`` is the whole gang's.

    ``admitted``: when it was admitted (seconds, any epoch); the newest borrowed work is reclaimed first.
    ``stopping``: already asked to stop (preempted, cancelled, timed out); it holds its resources until it exits.
    """

    id: str
    queue: str
    priority: int
    resources: Resources
    admitted: float = 0.0
    stopping: bool = False


class PendingJob(NamedTuple):  # a tuple: a round builds thousands of these
    """A job waiting for admission. ``resources`` are per worker; ``workers`` is the gang size.

    ``submitted`` orders FIFO (seconds, any epoch); ``not_before``: no admission before then (retry backoff).
    """

    id: str
    queue: str
    priority: int = 0
    resources: Resources = _ONE_CPU_ONE_GB
    workers: int = 1
    submitted: float = 0.0
    not_before: float = 0.0

    @property
    def demand(self) -> Resources:
        """What admission needs at once: every worker's resources."""
        return self.resources if self.workers == 1 else self.resources.times(self.workers)


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything one planning round reads. ``capacity``: per backend name; ``now``: seconds, same epoch as
    ``not_before``."""

    queues: Sequence[QueueState]
    running: Sequence[RunningJob]
    pending: Sequence[PendingJob]
    capacity: Mapping[str, Resources]
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class Admission:
    """Start this job now. ``borrowed``: how much of its demand is quota borrowed from the cohort."""

    job_id: str
    queue: str
    borrowed: Resources = ZERO

    @property
    def reason(self) -> str:
        """In words, for the job's event history."""
        if self.borrowed.is_zero():
            return f"admitted within the nominal quota of queue {self.queue!r}"
        return f"admitted to queue {self.queue!r} borrowing {describe_amount(self.borrowed)} of idle cohort quota"


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop this running job (it runs on borrowed quota) so that ``for_job`` gets its queue's nominal quota."""

    job_id: str
    queue: str
    for_job: str
    for_queue: str

    @property
    def reason(self) -> str:
        """In words, for the job's event history."""
        return (
            f"preempted: queue {self.queue!r} was running it on borrowed quota, and queue {self.for_queue!r} "
            f"needs its nominal quota back for job {self.for_job}"
        )


@dataclass(frozen=True)
class Hold:
    """Why a job waits: a stable ``code``, the facts behind it, and the jobs ahead of it in its queue."""

    job_id: str
    queue: str
    code: HoldCode
    facts: Mapping[str, Any]
    _order: Sequence[PendingJob] = field(default=(), repr=False)
    _position: int = field(default=0, repr=False)
    _admitted: frozenset[str] | set[str] = field(default=frozenset(), repr=False)

    @property
    def ahead(self) -> list[str]:
        """Ids of the jobs of its queue that come before it and are still waiting."""
        return [job.id for job in self._order[: self._position] if job.id not in self._admitted]

    @property
    def message(self) -> str:
        """The reason in plain words, with the jobs ahead."""
        text = describe_hold(self.code, self.facts)
        ahead = self.ahead
        if ahead:
            more = len(ahead) - AHEAD_SHOWN
            shown = ", ".join(ahead[:AHEAD_SHOWN]) + (f" (+{more} more)" if more > 0 else "")
            text += f"; {len(ahead)} job{'s' if len(ahead) != 1 else ''} ahead in queue {self.queue!r}: {shown}"
        return text + "."


@dataclass
class AdmissionPlan:
    """What to do this round: admit (in this order), preempt, and why every other pending job waits."""

    admitted: list[Admission] = field(default_factory=list)
    preempted: list[Preemption] = field(default_factory=list)
    held: dict[str, Hold] = field(default_factory=dict)

    def reason(self, job_id: str) -> str | None:
        """Why ``job_id`` waits (None when it was admitted or is not pending)."""
        hold = self.held.get(job_id)
        return None if hold is None else hold.message


class _Books:
    """Who uses what during one round: per queue, per cohort, per backend (admissions update it as they go)."""

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.queues = {queue.name: queue for queue in snapshot.queues}
        self.capacity = dict(snapshot.capacity)
        self.queue_used: dict[str, Resources] = {name: ZERO for name in self.queues}
        self.cohort_nominal: dict[str, Resources] = {}
        self.cohort_used: dict[str, Resources] = {}
        self.backend_used: dict[str, Resources] = {name: ZERO for name in self.capacity}
        self.running: dict[str, RunningJob] = {}
        self.stopping: dict[str, RunningJob] = {}
        for queue in snapshot.queues:
            key = queue.cohort_key
            self.cohort_nominal[key] = self.cohort_nominal.get(key, ZERO) + queue.nominal
            self.cohort_used.setdefault(key, ZERO)
        for job in snapshot.running:
            self.take(job.queue, job.resources)
            (self.stopping if job.stopping else self.running)[job.id] = job

    def take(self, queue_name: str, amount: Resources, *, on_backend: bool = True) -> None:
        """Count ``amount`` as used by ``queue_name``: its quota, its cohort's and (``on_backend``) the backend's."""
        queue = self.queues.get(queue_name)
        if queue is None:  # a running job of a deleted queue still holds its backend's resources
            return
        self.queue_used[queue.name] = self.queue_used[queue.name] + amount
        self.cohort_used[queue.cohort_key] = self.cohort_used[queue.cohort_key] + amount
        if on_backend and queue.backend in self.backend_used:
            self.backend_used[queue.backend] = self.backend_used[queue.backend] + amount

    def share(self, queue: QueueState) -> float:
        total = self.capacity.get(queue.backend, ZERO)
        return self.queue_used[queue.name].dominant_share(total)

    def borrowing(self, queue_name: str) -> bool:
        """True when the queue uses more than its nominal quota of some resource."""
        queue = self.queues[queue_name]
        return not self.queue_used[queue_name].fits_within(queue.nominal)

    def free(self, queue: QueueState) -> tuple[Resources, Resources]:
        """(idle quota of its cohort, free capacity of its backend)."""
        cohort = self.cohort_nominal[queue.cohort_key] - self.cohort_used[queue.cohort_key]
        backend = self.capacity[queue.backend] - self.backend_used[queue.backend]
        return cohort, backend

    def releasing(self, queue: QueueState) -> tuple[Resources, list[str]]:
        """Resources held by stopping jobs that will come back to this queue's cohort and backend."""
        amount, ids = ZERO, list[str]()
        for job in self.stopping.values():
            other = self.queues.get(job.queue)
            if other is not None and other.cohort_key == queue.cohort_key and other.backend == queue.backend:
                amount, ids = amount + job.resources, [*ids, job.id]
        return amount, ids


class _Planner:
    """One planning round over a snapshot; :func:`plan_admission` is its public face."""

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot = snapshot
        self.books = _Books(snapshot)
        self.plan = AdmissionPlan()
        self.admitted_ids: set[str] = set()
        self.orders: dict[str, list[PendingJob]] = {}
        self.positions: dict[str, int] = {}
        self.waiting: dict[str, list[PendingJob]] = {}
        self.ceilings: dict[str, tuple[Resources, str]] = {}

    def run(self) -> AdmissionPlan:
        self._sort_and_screen()
        self._pass(borrowing=False)
        self._pass(borrowing=True)
        return self.plan

    def _hold(self, job: PendingJob, code: HoldCode, **facts: Any) -> None:
        order = self.orders.get(job.queue, ())
        self.plan.held[job.id] = Hold(job.id, job.queue, code, facts, order, self.positions.get(job.id, 0),
                                      self.admitted_ids)

    def _sort_and_screen(self) -> None:
        """Sort each queue (priority, FIFO, id) and hold what cannot be admitted this round whatever the others do."""
        by_queue: dict[str, list[PendingJob]] = {}
        for job in self.snapshot.pending:
            by_queue.setdefault(job.queue, []).append(job)
        for name, jobs in by_queue.items():
            jobs.sort(key=lambda job: (-job.priority, job.submitted, job.id))
            self.orders[name] = jobs
            for position, job in enumerate(jobs):
                self.positions[job.id] = position
            self.waiting[name] = [job for job in jobs if self._screen(job)]

    def _screen(self, job: PendingJob) -> bool:
        """False (with a hold) for a job that cannot be admitted this round, whatever else happens."""
        queue = self.books.queues.get(job.queue)
        if queue is None:
            self._hold(job, "no_queue", queue=job.queue)
            return False
        capacity = self.books.capacity.get(queue.backend)
        if capacity is None or capacity.is_zero():
            self._hold(job, "no_backend", queue=queue.name, backend=queue.backend)
            return False
        if queue.budget_hold:
            self._hold(job, "budget", reason=queue.budget_hold)
            return False
        if job.not_before > self.snapshot.now:
            self._hold(job, "backoff", not_before=job.not_before, wait=job.not_before - self.snapshot.now)
            return False
        return self._screen_size(job, queue, capacity)

    def _screen_size(self, job: PendingJob, queue: QueueState, capacity: Resources) -> bool:
        demand = job.demand
        over = demand.first_over(capacity)
        if over is not None:
            self._hold(job, "too_big", demand=demand, workers=job.workers, limit="capacity", backend=queue.backend,
                       resource=over, have=getattr(capacity, over))
            return False
        if queue.name not in self.ceilings:
            self.ceilings[queue.name] = self._quota_ceiling(queue)
        ceiling, why = self.ceilings[queue.name]
        over = demand.first_over(ceiling)
        if over is not None:
            self._hold(job, "too_big", demand=demand, workers=job.workers, limit=why, queue=queue.name,
                       resource=over, have=getattr(ceiling, over))
            return False
        return True

    def _quota_ceiling(self, queue: QueueState) -> tuple[Resources, str]:
        """The most a queue can ever hold: nominal + borrowing limit, and never more than its cohort's total."""
        cohort_total = self.books.cohort_nominal[queue.cohort_key]
        if queue.cohort is None:
            return queue.nominal, "its nominal quota; it is in no cohort"
        if queue.borrowing_limit is None:
            return cohort_total, f"the total nominal quota of cohort {queue.cohort!r}"
        limited = queue.nominal + queue.borrowing_limit
        ceiling = Resources(*(min(getattr(limited, r), getattr(cohort_total, r)) for r in RESOURCES))
        return ceiling, "nominal quota + borrowing limit, within its cohort's total"

    def _pass(self, *, borrowing: bool) -> None:
        """Admit in DRF order across queues; pass 1 only within nominal quota, pass 2 borrowing too."""
        heap: list[tuple[float, float, str]] = []
        cursor: dict[str, int] = {}
        for name, jobs in self.waiting.items():
            if jobs:
                cursor[name] = 0
                heap.append((self.books.share(self.books.queues[name]), jobs[0].submitted, name))
        heapq.heapify(heap)
        while heap:
            share, _, name = heapq.heappop(heap)
            queue, jobs = self.books.queues[name], self.waiting[name]
            index = cursor[name]
            job = jobs[index]
            admitted = self._try(job, queue, borrowing=borrowing)
            if not admitted and queue.strict_fifo:
                if borrowing or job.id in self.plan.held:
                    self._block_behind(job, jobs[index + 1 :], queue)
                continue  # a strict queue admits nothing past a head that does not fit
            cursor[name] = index + 1
            if cursor[name] < len(jobs):
                share = self.books.share(queue) if admitted else share  # only an admission changes it
                heapq.heappush(heap, (share, jobs[cursor[name]].submitted, name))
        # What pass 1 admitted or decided (held, reclaiming) is done; pass 2 sees only jobs that need to borrow.
        decided = self.admitted_ids | self.plan.held.keys()
        for name in self.waiting:
            self.waiting[name] = [job for job in self.waiting[name] if job.id not in decided]

    def _block_behind(self, head: PendingJob, rest: Iterable[PendingJob], queue: QueueState) -> None:
        for job in rest:
            self._hold(job, "strict_fifo", queue=queue.name, blocker=head.id)

    def _try(self, job: PendingJob, queue: QueueState, *, borrowing: bool) -> bool:
        """Admit ``job`` if it fits now; otherwise hold it (and maybe reclaim borrowed quota for it)."""
        demand = job.demand
        used = self.books.queue_used[queue.name]
        within_nominal = (used + demand).fits_within(queue.nominal)
        if not borrowing and not within_nominal:
            return False  # pass 2 decides (and explains) jobs that need to borrow
        cohort_free, backend_free = self.books.free(queue)
        if within_nominal:
            if demand.fits_within(cohort_free) and demand.fits_within(backend_free):
                self._admit(job, queue, ZERO)
                return True
            if not borrowing:
                self._reclaim(job, queue)
            return False
        limit_over = self._over_borrowing_limit(queue, used + demand)
        if limit_over is not None:
            self._hold_borrow_limit(job, queue, limit_over)
            return False
        if demand.fits_within(cohort_free) and demand.fits_within(backend_free):
            over = (used + demand - queue.nominal).at_least_zero()  # the queue's borrowing after this job
            self._admit(job, queue, Resources(*(min(getattr(over, r), getattr(demand, r)) for r in RESOURCES)))
            return True
        self._hold_full(job, queue, cohort_free, backend_free)
        return False

    def _over_borrowing_limit(self, queue: QueueState, total: Resources) -> str | None:
        if queue.cohort is None:
            return total.first_over(queue.nominal)
        if queue.borrowing_limit is None:
            return None
        return total.first_over(queue.nominal + queue.borrowing_limit)

    def _admit(self, job: PendingJob, queue: QueueState, borrowed: Resources) -> None:
        self.books.take(queue.name, job.demand)
        self.admitted_ids.add(job.id)
        self.plan.admitted.append(Admission(job.id, queue.name, borrowed))
        self.plan.held.pop(job.id, None)

    def _hold_borrow_limit(self, job: PendingJob, queue: QueueState, resource: str) -> None:
        used = getattr(self.books.queue_used[queue.name], resource)
        nominal = getattr(queue.nominal, resource)
        if queue.cohort is None:
            self._hold(job, "quota", team=queue.team, queue=queue.name, cohort=None, resource=resource, used=used,
                       nominal=nominal, demand=job.demand, workers=job.workers)
            return
        limit = getattr(queue.borrowing_limit or ZERO, resource)
        borrow = used + getattr(job.demand, resource) - nominal
        self._hold(job, "borrow_limit", team=queue.team, queue=queue.name, resource=resource, used=used,
                   nominal=nominal, borrow=borrow, limit=limit)

    def _hold_full(self, job: PendingJob, queue: QueueState, cohort_free: Resources, backend_free: Resources) -> None:
        """Hold a job that would fit its quota but not what is idle now: say which constraint binds."""
        demand = job.demand
        short = demand.first_over(cohort_free)
        if short is not None:
            self._hold(job, "quota", team=queue.team, queue=queue.name, cohort=queue.cohort, resource=short,
                       used=getattr(self.books.queue_used[queue.name], short),
                       nominal=getattr(queue.nominal, short), idle=max(getattr(cohort_free, short), 0.0),
                       demand=demand, workers=job.workers)
            return
        short = demand.first_over(backend_free) or "cpu"
        self._hold(job, "capacity", backend=queue.backend, resource=short,
                   free=max(getattr(backend_free, short), 0.0), capacity=getattr(self.books.capacity[queue.backend],
                                                                                  short),
                   demand=demand, workers=job.workers)

    def _reclaim(self, job: PendingJob, queue: QueueState) -> None:
        """``job`` fits its queue's nominal quota but not what is idle: wait for, or preempt, borrowed work."""
        demand = job.demand
        cohort_free, backend_free = self.books.free(queue)
        releasing, stopping_ids = self.books.releasing(queue)
        if demand.fits_within(cohort_free + releasing) and demand.fits_within(backend_free + releasing):
            self._reserve(job, queue)
            self._hold(job, "releasing", queue=queue.name, jobs=stopping_ids)
            return
        victims = self._victims(job, queue, cohort_free + releasing, backend_free + releasing)
        if not victims:
            self._hold_full(job, queue, cohort_free, backend_free)
            return
        for victim in victims:
            del self.books.running[victim.id]
            self.books.stopping[victim.id] = victim._replace(stopping=True)
            self.plan.preempted.append(Preemption(victim.id, victim.queue, job.id, queue.name))
        self._reserve(job, queue)
        self._hold(job, "reclaiming", queue=queue.name, jobs=stopping_ids, victims=[v.id for v in victims])

    def _reserve(self, job: PendingJob, queue: QueueState) -> None:
        """Keep ``job``'s quota from later borrowers this round: it is its once the stopping jobs exit. Only the
        quota: the backend's capacity is checked for real at admission, and another cohort's queue within its own
        nominal quota may use what is free now (nominal quotas fit the cluster, so both fit once borrowers left)."""
        self.books.take(queue.name, job.demand, on_backend=False)

    def _victims(
        self, job: PendingJob, queue: QueueState, cohort_free: Resources, backend_free: Resources
    ) -> list[RunningJob]:
        """The fewest borrowed jobs (lowest priority, newest first) whose resources make ``job`` fit; [] if none."""
        candidates = [
            running
            for running in self.books.running.values()
            if running.queue != queue.name
            and running.queue in self.books.queues
            and self.books.queues[running.queue].cohort_key == queue.cohort_key
            and self.books.borrowing(running.queue)
        ]
        candidates.sort(key=lambda running: (running.priority, -running.admitted, running.id))
        demand, chosen = job.demand, []
        over_nominal = {name: self.books.queue_used[name] - self.books.queues[name].nominal for name in
                        {c.queue for c in candidates}}
        freed_cohort, freed_backend = ZERO, ZERO
        for candidate in candidates:
            if over_nominal[candidate.queue].at_least_zero().is_zero():
                continue  # that queue is back within its nominal quota: nothing of it is borrowed any more
            chosen.append(candidate)
            over_nominal[candidate.queue] = over_nominal[candidate.queue] - candidate.resources
            freed_cohort = freed_cohort + candidate.resources
            if self.books.queues[candidate.queue].backend == queue.backend:
                freed_backend = freed_backend + candidate.resources
            if demand.fits_within(cohort_free + freed_cohort) and demand.fits_within(backend_free + freed_backend):
                return self._fewest(chosen, demand, queue, cohort_free, backend_free)
        return []

    def _fewest(
        self, chosen: list[RunningJob], demand: Resources, queue: QueueState, cohort_free: Resources,
        backend_free: Resources,
    ) -> list[RunningJob]:
        """Drop victims (the last chosen first) whose preemption turns out not to be needed."""
        kept = list(chosen)
        for victim in reversed(chosen):
            trial = [v for v in kept if v.id != victim.id]
            cohort = cohort_free + _total(v.resources for v in trial)
            backend = backend_free + _total(
                v.resources for v in trial if self.books.queues[v.queue].backend == queue.backend
            )
            if demand.fits_within(cohort) and demand.fits_within(backend):
                kept = trial
        return kept


def _total(amounts: Iterable[Resources]) -> Resources:
    total = ZERO
    for amount in amounts:
        total = total + amount
    return total


def plan_admission(snapshot: ClusterSnapshot) -> AdmissionPlan:
    """Decide one admission round: which pending jobs start (in order), which borrowed jobs are preempted to give
    queues their nominal quota back, and, for every other pending job, why it waits."""
    return _Planner(snapshot).run()
