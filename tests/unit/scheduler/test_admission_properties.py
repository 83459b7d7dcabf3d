"""Invariants of the admission planner over random clusters (hypothesis), checked round after round.

* never over capacity; never over a queue's nominal + borrowing limit, nor a cohort's total nominal quota;
* gangs all or nothing: a gang whose whole demand does not fit is never admitted, even when one worker would;
* nominal quota is a guarantee: a job that fits its queue's idle nominal quota starts within two rounds, however
  much other queues borrowed (reclaim), when the nominal quotas fit the cluster;
* dominant-resource fairness: each admission goes to a queue with the lowest dominant share among the queues
  that had a job able to start at that moment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recplane.scheduler.admission import (
    RESOURCES,
    AdmissionPlan,
    ClusterSnapshot,
    PendingJob,
    QueueState,
    Resources,
    RunningJob,
    plan_admission,
)

EPS = 1e-6
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

amounts = st.sampled_from([0.5, 1.0, 2.0, 3.0])
memories = st.sampled_from([0.5, 1.0, 4.0, 8.0])


@st.composite
def clusters(draw: st.DrawFn) -> tuple[Resources, list[QueueState]]:
    capacity = Resources(draw(st.integers(2, 16)), draw(st.integers(4, 64)), draw(st.sampled_from([0, 0, 2])))
    count = draw(st.integers(1, 5))
    queues = []
    for index in range(count):
        nominal = Resources(*(draw(st.floats(0, getattr(capacity, r) / count)) for r in RESOURCES))
        limit = draw(st.one_of(st.none(), st.builds(Resources, st.floats(0, 8), st.floats(0, 32), st.just(math.inf))))
        cohort = draw(st.sampled_from(["c1", "c1", "c2", None]))
        queues.append(QueueState(f"q{index}", f"team{index}", nominal, cohort=cohort, borrowing_limit=limit,
                                 strict_fifo=draw(st.booleans())))
    return capacity, queues


@st.composite
def arrivals(draw: st.DrawFn, queues: Sequence[QueueState], start: int) -> list[PendingJob]:
    jobs = []
    for offset in range(draw(st.integers(0, 12))):
        queue = draw(st.sampled_from(list(queues)))
        per_worker = Resources(draw(amounts), draw(memories), draw(st.sampled_from([0, 0, 0, 1])))
        jobs.append(PendingJob(f"j{start + offset}", queue.name, draw(st.integers(0, 3)), per_worker,
                               draw(st.sampled_from([1, 1, 1, 2, 4])), float(start + offset)))
    return jobs


def _used(jobs: Sequence[RunningJob], queues: Sequence[QueueState]) -> dict[str, Resources]:
    by_queue = {queue.name: Resources() for queue in queues}
    for job in jobs:
        by_queue[job.queue] = by_queue[job.queue] + job.resources
    return by_queue


def _check_invariants(capacity: Resources, queues: Sequence[QueueState], holding: Sequence[RunningJob]) -> None:
    used = _used(holding, queues)
    total = sum((amount for amount in used.values()), Resources())
    assert total.fits_within(capacity), (total, capacity)
    cohorts: dict[str, tuple[Resources, Resources]] = {}
    for queue in queues:
        mine = used[queue.name]
        if queue.cohort is None:
            assert mine.fits_within(queue.nominal), (queue, mine)
            continue
        if queue.borrowing_limit is not None:
            assert mine.fits_within(queue.nominal + queue.borrowing_limit), (queue, mine)
        nominal, usage = cohorts.get(queue.cohort, (Resources(), Resources()))
        cohorts[queue.cohort] = (nominal + queue.nominal, usage + mine)
    for nominal, usage in cohorts.values():
        assert usage.fits_within(nominal), (usage, nominal)


def _apply(plan: AdmissionPlan, running: list[RunningJob], pending: list[PendingJob], now: float
           ) -> tuple[list[RunningJob], list[PendingJob]]:
    """The next round's state: preempted jobs have exited, admitted ones run."""
    gone = {p.job_id for p in plan.preempted}
    admitted = {a.job_id for a in plan.admitted}
    still = [job for job in running if job.id not in gone]
    still += [RunningJob(job.id, job.queue, job.priority, job.demand, now) for job in pending if job.id in admitted]
    return still, [job for job in pending if job.id not in admitted]


@SETTINGS
@given(data=st.data())
def test_rounds_never_exceed_capacity_quotas_or_cohorts(data: st.DataObject) -> None:
    capacity, queues = data.draw(clusters())
    running: list[RunningJob] = []
    pending: list[PendingJob] = []
    for round_number in range(6):
        pending += data.draw(arrivals(queues, round_number * 100))
        plan = plan_admission(ClusterSnapshot(queues, running, pending, {"local": capacity}, now=round_number))
        admitted = {a.job_id for a in plan.admitted}
        assert admitted.isdisjoint(plan.held) and admitted | set(plan.held) == {job.id for job in pending}
        holding = running + [RunningJob(j.id, j.queue, j.priority, j.demand) for j in pending if j.id in admitted]
        _check_invariants(capacity, queues, holding)  # preempted jobs still hold their resources this round
        running, pending = _apply(plan, running, pending, round_number)
        finished = data.draw(st.sets(st.sampled_from([job.id for job in running]))) if running else set()
        running = [job for job in running if job.id not in finished]


@SETTINGS
@given(
    cpu=st.integers(2, 8),
    used=st.integers(0, 7),
    workers=st.integers(2, 6),
    per_worker=st.sampled_from([1.0, 2.0]),
)
def test_a_gang_starts_whole_or_not_at_all(cpu: int, used: int, workers: int, per_worker: float) -> None:
    capacity = Resources(cpu, 1000)
    used = min(used, cpu - 1)
    queue = QueueState("q", "t", capacity)
    running = [RunningJob("r", "q", 0, Resources(used, 1))] if used else []
    gang = PendingJob("gang", "q", 0, Resources(per_worker, 1), workers)
    plan = plan_admission(ClusterSnapshot([queue], running, [gang], {"local": capacity}))
    fits = used + per_worker * workers <= cpu
    assert ([a.job_id for a in plan.admitted] == ["gang"]) == fits
    if not fits:
        assert "at once" in plan.held["gang"].message


@SETTINGS
@given(data=st.data())
def test_nominal_quota_is_reclaimed_within_two_rounds(data: st.DataObject) -> None:
    capacity = Resources(data.draw(st.integers(4, 16)), data.draw(st.integers(8, 64)))
    share = data.draw(st.floats(0.2, 0.8))
    lender_nominal = Resources(capacity.cpu * share, capacity.memory_gb * share)
    borrower_nominal = capacity - lender_nominal
    lender = QueueState("lender", "a", lender_nominal, cohort="c")
    borrower = QueueState("borrower", "b", borrower_nominal, cohort="c",
                          borrowing_limit=data.draw(st.one_of(st.none(), st.just(lender_nominal))))
    queues = [lender, borrower]
    # the borrower fills the whole cluster with small jobs of any priority
    running: list[RunningJob] = []
    pending = [PendingJob(f"b{i}", "borrower", data.draw(st.integers(0, 9)), Resources(0.5, 1.0), 1, i)
               for i in range(int(capacity.cpu * 2) + 4)]
    plan = plan_admission(ClusterSnapshot(queues, running, pending, {"local": capacity}))
    running, pending = _apply(plan, running, pending, 0)
    workers = data.draw(st.integers(1, 3))
    per_worker = Resources(lender_nominal.cpu / workers * data.draw(st.floats(0.1, 1.0)),
                           lender_nominal.memory_gb / workers * data.draw(st.floats(0.1, 1.0)))
    claim = PendingJob("claim", "lender", 0, per_worker, workers, 1000)
    pending.append(claim)
    for round_number in range(2):
        plan = plan_admission(ClusterSnapshot(queues, running, pending, {"local": capacity}, now=round_number))
        if "claim" in {a.job_id for a in plan.admitted}:
            return
        running, pending = _apply(plan, running, pending, round_number)
    raise AssertionError(f"claim still waits: {plan.held['claim'].message}")


@SETTINGS
@given(data=st.data())
def test_each_admission_goes_to_a_queue_with_the_lowest_dominant_share(data: st.DataObject) -> None:
    capacity = Resources(data.draw(st.integers(4, 32)), data.draw(st.integers(8, 128)), data.draw(st.integers(0, 4)))
    count = data.draw(st.integers(2, 5))
    queues = [QueueState("lender", "l", capacity, cohort="c")]
    queues += [QueueState(f"q{i}", f"t{i}", Resources(), cohort="c") for i in range(count)]
    shapes = {f"q{i}": Resources(data.draw(amounts), data.draw(memories), data.draw(st.sampled_from([0, 0, 1])))
              for i in range(count)}
    pending = [PendingJob(f"{name}-{n}", name, 0, shape, 1, float(n)) for name, shape in shapes.items()
               for n in range(40)]
    plan = plan_admission(ClusterSnapshot(queues, [], pending, {"local": capacity}))
    used = {name: Resources() for name in shapes}
    left = dict.fromkeys(shapes, 40)
    for admission in plan.admitted:
        free = capacity - sum(used.values(), Resources())
        able = [name for name, shape in shapes.items() if left[name] and shape.fits_within(free)]
        lowest = min(used[name].dominant_share(capacity) for name in able)
        assert used[admission.queue].dominant_share(capacity) <= lowest + EPS
        used[admission.queue] = used[admission.queue] + shapes[admission.queue]
        left[admission.queue] -= 1
    free = capacity - sum(used.values(), Resources())
    assert not any(left[name] and shape.fits_within(free) for name, shape in shapes.items())  # work-conserving
