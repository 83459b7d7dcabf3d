"""The words `recplane jobs explain` prints for a waiting job: which quota, which constraint, who is ahead."""

from __future__ import annotations

from recplane.scheduler.admission import (
    ClusterSnapshot,
    PendingJob,
    QueueState,
    Resources,
    RunningJob,
    describe_amount,
    plan_admission,
)

R = Resources
CAPACITY = {"local": R(8, 32)}
QUEUES = [QueueState("a", "team-a", R(4, 16), cohort="research"), QueueState("b", "team-b", R(4, 16),
                                                                             cohort="research")]


def test_a_full_queue_in_a_full_cohort_names_the_quota_the_idle_amount_and_the_jobs_ahead() -> None:
    running = [RunningJob(f"b-run{i}", "b", 0, R(1, 1), i) for i in range(4)]
    running += [RunningJob(f"a-run{i}", "a", 0, R(1, 1), i) for i in range(4)]
    pending = [PendingJob(f"b{i}", "b", 0, R(1, 2), 1, float(i)) for i in range(5)]
    hold = plan_admission(ClusterSnapshot(QUEUES, running, pending, CAPACITY)).held["b4"]
    assert hold.code == "quota"
    assert hold.ahead == ["b0", "b1", "b2", "b3"]
    assert hold.message == (
        "team-b's queue 'b' uses 4/4 CPU of its nominal quota and cohort 'research' has 0 CPU idle to borrow; it "
        "needs 1 CPU, 2 GB memory; 4 jobs ahead in queue 'b': b0, b1, b2 (+1 more)."
    )


def test_the_first_job_in_line_has_no_ahead_clause() -> None:
    running = [RunningJob("big", "a", 0, R(8, 8), 0)]
    pending = [PendingJob("b0", "b", 0, R(1, 1), 1, 0.0)]
    hold = plan_admission(ClusterSnapshot(QUEUES, running, pending, CAPACITY)).held["b0"]
    assert hold.message == (
        "Its queue 'b' needs its nominal quota back: preempting 1 job running on borrowed quota (big); it starts "
        "when they have stopped."
    )


def test_a_gang_says_it_needs_all_its_workers_at_once() -> None:
    running = [RunningJob("r", "a", 0, R(6, 6), 0)]
    queues = [QueueState("a", "team-a", R(100, 100))]  # quota to spare: the machine is what binds
    pending = [PendingJob("gang", "a", 0, R(1, 2), 3, 0.0)]
    hold = plan_admission(ClusterSnapshot(queues, running, pending, CAPACITY)).held["gang"]
    assert hold.message == (
        "The local backend has 2/8 CPU free; it needs 3 CPU, 6 GB memory at once (3 workers of 1 CPU, 2 GB memory)."
    )


def test_amounts_read_naturally() -> None:
    assert describe_amount(R(0.5, 1.5, 0)) == "0.5 CPU, 1.5 GB memory"
    assert describe_amount(R(2, 0, 1)) == "2 CPU, 1 GPU"
    assert describe_amount(R()) == "no resources"
