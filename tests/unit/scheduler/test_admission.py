"""The admission planner on hand-built clusters: order, borrowing, reclaim, gangs, holds."""

from __future__ import annotations

import math

from recplane.scheduler.admission import (
    ClusterSnapshot,
    PendingJob,
    QueueState,
    Resources,
    RunningJob,
    plan_admission,
)

R = Resources
CAPACITY = {"local": R(8, 32)}


def _queues(borrowing_limit: Resources | None = None) -> list[QueueState]:
    return [
        QueueState("a", "team-a", R(4, 16), cohort="c", borrowing_limit=borrowing_limit),
        QueueState("b", "team-b", R(4, 16), cohort="c", borrowing_limit=borrowing_limit),
    ]


def _job(job_id: str, queue: str, cpu: float = 1, *, priority: int = 0, submitted: float = 0, workers: int = 1,
         memory: float = 1) -> PendingJob:
    return PendingJob(job_id, queue, priority, R(cpu, memory), workers, submitted)


def test_priority_first_then_fifo_then_id_within_a_queue() -> None:
    queue = QueueState("q", "t", R(2, 8))
    pending = [_job("late-low", "q", submitted=1), _job("high", "q", priority=5, submitted=9),
               _job("early-low", "q", submitted=0), _job("b-tie", "q", submitted=1)]
    plan = plan_admission(ClusterSnapshot([queue], [], pending, CAPACITY))
    assert [a.job_id for a in plan.admitted] == ["high", "early-low"]
    assert plan.held["b-tie"].ahead == []
    assert plan.held["late-low"].ahead == ["b-tie"]


def test_idle_cohort_quota_is_borrowed_and_the_borrowed_amount_recorded() -> None:
    pending = [_job(f"a{i}", "a", submitted=i) for i in range(6)]
    plan = plan_admission(ClusterSnapshot(_queues(), [], pending, CAPACITY))
    assert [a.job_id for a in plan.admitted] == [f"a{i}" for i in range(6)]
    assert [a.borrowed.cpu for a in plan.admitted] == [0, 0, 0, 0, 1, 1]
    assert "borrowing 1 CPU of idle cohort quota" in plan.admitted[-1].reason


def test_borrowing_limit_caps_what_a_queue_borrows_and_says_so() -> None:
    pending = [_job(f"a{i}", "a", submitted=i) for i in range(8)]
    plan = plan_admission(ClusterSnapshot(_queues(borrowing_limit=R(2, math.inf)), [], pending, CAPACITY))
    assert len(plan.admitted) == 6
    message = plan.held["a6"].message
    assert "borrowing 3 CPU, over the queue's borrowing limit of 2 CPU" in message
    assert "uses 6/4 CPU (2 borrowed)" in message


def test_a_queue_in_no_cohort_cannot_borrow() -> None:
    queues = [QueueState("solo", "t", R(2, 8)), QueueState("idle", "u", R(6, 24))]
    pending = [_job(f"s{i}", "solo", submitted=i) for i in range(3)]
    plan = plan_admission(ClusterSnapshot(queues, [], pending, CAPACITY))
    assert len(plan.admitted) == 2
    assert "is in no cohort, so it cannot borrow" in plan.held["s2"].message


def test_reclaim_preempts_the_lowest_priority_newest_borrowed_jobs_and_no_more() -> None:
    running = [RunningJob(f"a{i}", "a", priority=i % 2, resources=R(1, 1), admitted=i) for i in range(8)]
    pending = [_job("b1", "b", cpu=2, priority=-5)]
    plan = plan_admission(ClusterSnapshot(_queues(), running, pending, CAPACITY))
    assert plan.admitted == []
    # priority 0 jobs go first (a0, a2, a4, a6), newest first: a6 then a4; two CPUs are enough
    assert [p.job_id for p in plan.preempted] == ["a6", "a4"]
    assert {p.for_job for p in plan.preempted} == {"b1"}
    assert plan.held["b1"].code == "reclaiming"
    assert "preempting 2 jobs running on borrowed quota (a6, a4)" in plan.held["b1"].message


def test_only_borrowing_queues_are_reclaimed_from() -> None:
    running = [RunningJob(f"a{i}", "a", 0, R(1, 1), i) for i in range(4)]  # a uses exactly its nominal 4
    running += [RunningJob("b0", "b", 0, R(4, 1), 9)]
    pending = [_job("b-more", "b", cpu=1)]
    plan = plan_admission(ClusterSnapshot(_queues(), running, pending, CAPACITY))
    assert plan.preempted == []
    assert plan.held["b-more"].code == "quota"


def test_a_job_waiting_for_stopping_jobs_triggers_no_further_preemption() -> None:
    running = [RunningJob(f"a{i}", "a", 0, R(1, 1), i, stopping=i >= 6) for i in range(8)]
    pending = [_job("b1", "b", cpu=2), _job("a-next", "a", submitted=5)]
    plan = plan_admission(ClusterSnapshot(_queues(), running, pending, CAPACITY))
    assert plan.preempted == [] and plan.admitted == []
    assert plan.held["b1"].code == "releasing"
    assert "waiting for 2 stopping jobs (a6, a7)" in plan.held["b1"].message


def test_reclaimed_quota_is_reserved_against_borrowers_in_the_same_round() -> None:
    running = [RunningJob(f"a{i}", "a", 0, R(1, 1), i) for i in range(8)]
    pending = [_job("b1", "b", cpu=2), _job("a9", "a", submitted=9)]
    plan = plan_admission(ClusterSnapshot(_queues(), running, pending, CAPACITY))
    assert [a.job_id for a in plan.admitted] == []
    assert len(plan.preempted) == 2


def test_gang_is_all_or_nothing_and_the_hold_says_at_once() -> None:
    queue = QueueState("q", "t", R(8, 32))
    running = [RunningJob("r", "q", 0, R(5, 5), 0)]
    pending = [_job("gang", "q", cpu=1, workers=4, submitted=0), _job("single", "q", cpu=1, submitted=1)]
    plan = plan_admission(ClusterSnapshot([queue], running, pending, CAPACITY))
    assert [a.job_id for a in plan.admitted] == ["single"]
    message = plan.held["gang"].message
    assert "4 CPU, 4 GB memory at once (4 workers of 1 CPU, 1 GB memory)" in message


def test_the_cluster_capacity_binds_even_when_quotas_are_larger() -> None:
    queue = QueueState("big", "t", R(100, 100))
    pending = [_job(f"j{i}", "big", cpu=3, submitted=i) for i in range(3)]
    plan = plan_admission(ClusterSnapshot([queue], [], pending, CAPACITY))
    assert len(plan.admitted) == 2
    assert plan.held["j2"].code == "capacity"
    assert "The local backend has 2/8 CPU free" in plan.held["j2"].message


def test_jobs_that_can_never_fit_say_why() -> None:
    queues = _queues(borrowing_limit=R(1, math.inf))
    pending = [_job("huge", "a", cpu=16), _job("over-limit", "a", cpu=6)]
    plan = plan_admission(ClusterSnapshot(queues, [], pending, CAPACITY))
    assert plan.held["huge"].code == "too_big"
    assert "the local backend has only 8 CPU in total" in plan.held["huge"].message
    assert "can never use more than 5 CPU" in plan.held["over-limit"].message


def test_strict_fifo_admits_nothing_past_a_blocked_head() -> None:
    queue = QueueState("q", "t", R(4, 16), strict_fifo=True)
    pending = [_job("head", "q", cpu=3, submitted=0), _job("next", "q", cpu=1, submitted=1)]
    running = [RunningJob("r", "q", 0, R(2, 2), 0)]
    plan = plan_admission(ClusterSnapshot([queue], running, pending, CAPACITY))
    assert plan.admitted == []
    assert plan.held["next"].code == "strict_fifo" and "job head at its head" in plan.held["next"].message


def test_best_effort_lets_a_small_job_pass_a_blocked_one() -> None:
    queue = QueueState("q", "t", R(4, 16))
    pending = [_job("head", "q", cpu=3, submitted=0), _job("next", "q", cpu=1, submitted=1)]
    running = [RunningJob("r", "q", 0, R(2, 2), 0)]
    plan = plan_admission(ClusterSnapshot([queue], running, pending, CAPACITY))
    assert [a.job_id for a in plan.admitted] == ["next"]


def test_budget_and_backoff_and_unknown_queue_holds() -> None:
    queues = [QueueState("spent", "t", R(4, 4), budget_hold="over budget"), QueueState("q", "t", R(4, 4))]
    pending = [
        _job("s", "spent"),
        PendingJob("later", "q", 0, R(1, 1), 1, 0, not_before=110.0),
        _job("lost", "nowhere"),
    ]
    plan = plan_admission(ClusterSnapshot(queues, [], pending, CAPACITY, now=100.0))
    assert plan.admitted == []
    assert plan.held["s"].message == "over budget."
    assert plan.held["later"].code == "backoff" and "(in 10 s)" in plan.held["later"].message
    assert "Queue 'nowhere' does not exist" in plan.held["lost"].message


def test_drf_admits_the_queue_with_the_lowest_dominant_share_next() -> None:
    # cpu-heavy vs memory-heavy queues borrowing from an idle lender: DRF alternates by dominant share
    queues = [QueueState("lender", "l", R(8, 32), cohort="c"), QueueState("cpu", "x", R(), cohort="c"),
              QueueState("mem", "y", R(), cohort="c")]
    pending = [_job(f"c{i}", "cpu", cpu=2, memory=1, submitted=i) for i in range(4)]
    pending += [_job(f"m{i}", "mem", cpu=0.5, memory=8, submitted=i) for i in range(4)]
    plan = plan_admission(ClusterSnapshot(queues, [], pending, CAPACITY))
    order = [a.job_id[0] for a in plan.admitted]
    assert order[:6] == ["c", "m", "c", "m", "c", "m"]


def test_pass_one_within_nominal_comes_before_borrowing() -> None:
    running = [RunningJob(f"a{i}", "a", 0, R(1, 1), i) for i in range(4)]
    pending = [_job("a-borrow", "a", submitted=0), _job("b-own", "b", cpu=4, submitted=5)]
    plan = plan_admission(ClusterSnapshot(_queues(), running, pending, CAPACITY))
    assert [a.job_id for a in plan.admitted] == ["b-own"]
    assert plan.held["a-borrow"].code == "quota"
    assert "cohort 'c' has 0 CPU idle to borrow" in plan.held["a-borrow"].message
