"""The scheduler benchmark's workload and its correctness checks: 20 teams' queues in 4 cohorts, N jobs.

Deterministic (seeded): every team has one queue with a nominal quota; queues of a cohort lend each other idle
quota, half of them with a borrowing limit; the cluster can hold every nominal quota at once (so nominal quota is a
guarantee the checks can hold the planner to). Jobs have priorities 0-9, 0.5-4 CPUs, 1-8 GB, a GPU now and then,
gangs of 1, 2 or 4 workers, and last 1-4 rounds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

from recplane.scheduler.admission import (
    AdmissionPlan,
    ClusterSnapshot,
    PendingJob,
    QueueState,
    Resources,
    RunningJob,
)

TEAMS = 20
COHORTS = 4
CAPACITY = Resources(400.0, 1600.0, 20.0)


class WorkJob(NamedTuple):
    """A job of the workload: the planner's view plus how many rounds it runs."""

    job: PendingJob
    rounds: int


def queues() -> list[QueueState]:
    """One queue per team; nominal quotas add up to the cluster; every other queue has a borrowing limit."""
    share = Resources(CAPACITY.cpu / TEAMS, CAPACITY.memory_gb / TEAMS, CAPACITY.gpu / TEAMS)
    return [
        QueueState(
            name=f"team{index:02d}",
            team=f"team{index:02d}",
            nominal=share,
            cohort=f"cohort{index % COHORTS}",
            borrowing_limit=Resources(share.cpu, share.memory_gb, share.gpu) if index % 2 else None,
        )
        for index in range(TEAMS)
    ]


def jobs(count: int, seed: int = 7) -> list[WorkJob]:
    """``count`` jobs spread unevenly over the teams (a few teams submit most), deterministic."""
    rng = random.Random(seed)
    weights = [1 + (index % 5) * 2 for index in range(TEAMS)]
    made = []
    for number in range(count):
        team = rng.choices(range(TEAMS), weights)[0]
        gpu = 1.0 if rng.random() < 0.03 else 0.0
        per_worker = Resources(rng.choice([0.5, 1, 1, 2, 4]), rng.choice([1, 2, 4, 8]), gpu)
        workers = 1 if gpu else rng.choice([1, 1, 1, 1, 2, 4])  # one GPU per team's nominal quota: no GPU gangs
        job = PendingJob(f"job{number:05d}", f"team{team:02d}", rng.randrange(10), per_worker, workers,
                         float(number))
        made.append(WorkJob(job, rng.randint(1, 4)))
    return made


def check_round(
    snapshot: ClusterSnapshot, plan: AdmissionPlan, capacity: Resources
) -> list[str]:
    """Every invariant one round must keep; returns the violations (empty when correct)."""
    problems: list[str] = []
    queue_of = {queue.name: queue for queue in snapshot.queues}
    pending = {job.id: job for job in snapshot.pending}
    admitted = {a.job_id for a in plan.admitted}
    if len(admitted) != len(plan.admitted) or admitted & set(plan.held):
        problems.append("a job was admitted twice or both admitted and held")
    used = {name: Resources() for name in queue_of}
    for job in snapshot.running:
        used[job.queue] = used[job.queue] + job.resources
    for job_id in admitted:
        job = pending[job_id]
        used[job.queue] = used[job.queue] + job.demand
    total = sum(used.values(), Resources())
    if not total.fits_within(capacity):
        problems.append(f"over capacity: {total} > {capacity}")
    cohorts: dict[str, tuple[Resources, Resources]] = {}
    for name, queue in queue_of.items():
        if queue.borrowing_limit is not None and not used[name].fits_within(queue.nominal + queue.borrowing_limit):
            problems.append(f"queue {name} over nominal + borrowing limit")
        key = queue.cohort_key
        nominal, usage = cohorts.get(key, (Resources(), Resources()))
        cohorts[key] = (nominal + queue.nominal, usage + used[name])
    problems += [f"cohort {key} over its nominal total" for key, (nominal, usage) in cohorts.items()
                 if not usage.fits_within(nominal)]
    claimed = dict(used)  # plus what jobs waiting for reclaimed quota have reserved in their queue
    for job_id, hold in plan.held.items():
        if hold.code in ("reclaiming", "releasing"):
            job = pending[job_id]
            claimed[job.queue] = claimed[job.queue] + job.demand
    for job_id, hold in plan.held.items():
        job = pending[job_id]
        queue = queue_of[job.queue]
        fits_nominal = (claimed[job.queue] + job.demand).fits_within(queue.nominal)
        if hold.code in ("quota", "capacity") and fits_nominal:
            problems.append(f"{job_id} fits its queue's idle nominal quota but waits ({hold.code})")
    return problems


def drf_order_problems(snapshot: ClusterSnapshot, plan: AdmissionPlan, capacity: Resources) -> list[str]:
    """Borrowing admissions (pass 2) follow DRF: once a queue admits, no queue that had a lower dominant share at
    that moment admits anything later in the round (it had nothing left that fits, and usage only grows)."""
    pending = {job.id: job for job in snapshot.pending}
    used = {queue.name: Resources() for queue in snapshot.queues}
    for job in snapshot.running:
        used[job.queue] = used[job.queue] + job.resources
    shares_at: list[tuple[str, dict[str, float]]] = []
    for admission in plan.admitted:
        job = pending[admission.job_id]
        if not admission.borrowed.is_zero():
            shares_at.append((job.queue, {name: amount.dominant_share(capacity) for name, amount in used.items()}))
        used[job.queue] = used[job.queue] + job.demand
    problems = []
    for index, (queue, shares) in enumerate(shares_at):
        for later, _ in shares_at[index + 1:]:
            if later != queue and shares[later] < shares[queue] - 1e-9:
                problems.append(f"{later} admitted after {queue} though its dominant share was lower")
    return problems[:5]


def running_after(
    plan: AdmissionPlan, running: Sequence[tuple[RunningJob, int]], pending: dict[str, WorkJob], round_number: int
) -> tuple[list[tuple[RunningJob, int]], list[str]]:
    """Next round's running jobs (with their end round) and the ids to queue again (preempted)."""
    preempted = {p.job_id for p in plan.preempted}
    still = [(job, end) for job, end in running if job.id not in preempted and end > round_number]
    for admission in plan.admitted:
        work = pending[admission.job_id]
        still.append((RunningJob(work.job.id, work.job.queue, work.job.priority, work.job.demand,
                                 float(round_number)), round_number + work.rounds))
    return still, sorted(preempted)
