"""Real jobs through the scheduler and the local backend: subprocesses, logs, retries, kills, cancel, timeout, usage,
gangs, borrowing and reclaim, budgets, and a scheduler restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from tests.fixtures.scheduler.waiting import command, wait_for, wait_status

from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.scheduler import Scheduler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

JOBS = "tests.fixtures.scheduler.jobs"


def test_a_custom_job_runs_prints_returns_and_is_accounted(scheduler: Scheduler) -> None:
    job = scheduler.submit({"kind": "custom", "entrypoint": f"{JOBS}:spin", "args": {"seconds": 0.5},
                            "team": "recsys", "name": "spinner"})
    done = scheduler.wait(job.id, timeout=120)
    assert done.status == "succeeded" and done.exit_code == 0 and done.attempts == 1
    assert done.result is not None and done.result["iterations"] > 0
    assert [(e.from_status, e.to_status) for e in done.events] == [
        (None, "queued"), ("queued", "admitted"), ("admitted", "running"), ("running", "succeeded")]
    log = "".join(scheduler.logs(job.id))
    assert "spun" in log and "attempt 1 exited with code 0" in log
    report = scheduler.usage(team="recsys", group_by=["team", "kind"])
    (row,) = report.rows
    assert row.group == {"team": "recsys", "kind": "custom"} and row.jobs == 1
    assert row.cpu_hours * 3600 > 0.3  # it spun for half a second (plus interpreter start-up)
    assert row.wall_hours > 0 and row.memory_gb_hours > 0 and row.cost > 0


def test_a_failing_job_is_retried_with_backoff_then_fails_with_its_error(scheduler: Scheduler) -> None:
    job = scheduler.submit({"entrypoint": f"{JOBS}:fail", "args": {"message": "disk full"}, "max_retries": 1,
                            "backoff_seconds": 0.5})
    done = scheduler.wait(job.id, timeout=120)
    assert done.status == "failed" and done.attempts == 2 and done.exit_code == 1
    assert done.error == "attempt 2 exited with code 1: ValueError: disk full"
    reasons = [e.reason for e in done.events]
    assert "retry 1 of 1 after a 0.5 s backoff" in reasons
    assert [e.to_status for e in done.events].count("running") == 2


def test_a_killed_job_process_is_retried(scheduler: Scheduler, tmp_path: Path) -> None:
    marker = tmp_path / "first-attempt"
    job = scheduler.submit({"entrypoint": f"{JOBS}:sleep_once", "args": {"marker": str(marker)}, "max_retries": 2,
                            "backoff_seconds": 0.2})
    wait_for(lambda: marker.exists(), 120, "the first attempt to start")
    pid = wait_for(lambda: scheduler.get(job.id).pid, 30, "the job's pid")
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    done = scheduler.wait(job.id, timeout=120)
    assert done.status == "succeeded" and done.attempts == 2 and done.result == {"attempt": "later"}
    assert "attempt 1 killed by SIGKILL" in [e.reason for e in done.events]
    rows = scheduler.usage(group_by=["job"]).rows
    assert rows[0].attempts == 2  # the killed attempt is accounted too


def test_cancel_stops_a_running_job_and_a_queued_one_at_once(scheduler: Scheduler) -> None:
    running = scheduler.submit({"command": command("import time; print('up', flush=True); time.sleep(60)"),
                                "resources": {"cpu": 4}})
    queued = scheduler.submit({"command": command("print('never')"), "resources": {"cpu": 4}})
    wait_status(scheduler, running.id, "running")
    assert scheduler.cancel(queued.id).status == "cancelled"
    scheduler.cancel(running.id)
    done = wait_status(scheduler, running.id, "cancelled", timeout=30)
    assert done.exit_code == -signal.SIGTERM
    assert scheduler.get(queued.id).attempts == 0


def test_a_job_past_its_timeout_is_stopped_and_fails(scheduler: Scheduler) -> None:
    job = scheduler.submit({"command": command("import time; time.sleep(60)"), "timeout_seconds": 1})
    done = scheduler.wait(job.id, timeout=60)
    assert done.status == "failed"
    assert done.error is not None and done.error.startswith("timed out after 1 s (killed by SIGTERM)")


def test_a_gang_waits_until_all_its_workers_fit_then_starts_them_together(scheduler: Scheduler) -> None:
    blocker = scheduler.submit({"command": command("import time; time.sleep(3)"), "resources": {"cpu": 3}})
    wait_status(scheduler, blocker.id, "running")
    gang = scheduler.submit({
        "command": command("import os; print('rank', os.environ['RECPLANE_WORKER_RANK'], 'of', "
                           "os.environ['RECPLANE_WORKERS'], flush=True)"),
        "workers": 3, "resources": {"cpu": 1, "memory_gb": 1},
    })
    explanation = scheduler.explain(gang.id)
    assert explanation.code == "quota"  # the default queue's quota is the whole 4-CPU machine
    assert "uses 3/4 CPU of its nominal quota" in explanation.message
    assert "3 CPU, 3 GB memory at once (3 workers of 1 CPU, 1 GB memory)" in explanation.message
    assert scheduler.get(gang.id).status == "queued"  # one worker would fit now; the gang does not
    done = scheduler.wait(gang.id, timeout=60)
    assert done.status == "succeeded"
    assert scheduler.get(blocker.id).finished_at <= done.started_at  # type: ignore[operator]
    log = "".join(scheduler.logs(gang.id))
    assert {"rank 0 of 3", "rank 1 of 3", "rank 2 of 3"} <= set(log.splitlines())


def test_borrowed_work_is_preempted_when_the_lender_needs_its_quota(scheduler: Scheduler) -> None:
    scheduler.apply_queues({"queues": [
        {"name": "lender", "team": "a", "cohort": "lab", "nominal": {"cpu": 2, "memory_gb": 8}},
        {"name": "borrower", "team": "b", "cohort": "lab", "nominal": {"cpu": 2, "memory_gb": 8}},
    ]})
    sleeper = command("import time; time.sleep(60)")
    borrowed = [scheduler.submit({"command": sleeper, "queue": "borrower", "team": "b", "priority": p,
                                  "resources": {"cpu": 1}}) for p in (5, 5, 0, 1)]
    for job in borrowed:
        wait_status(scheduler, job.id, "running")
    assert [scheduler.get(job.id).borrowed for job in borrowed] == [False, False, True, True]
    claim = scheduler.submit({"command": command("print('mine')"), "queue": "lender", "team": "a",
                              "resources": {"cpu": 1}})
    assert scheduler.wait(claim.id, timeout=60).status == "succeeded"
    victim = scheduler.get(borrowed[2].id)  # the lowest priority borrowed job
    assert victim.preempted_count == 1 and victim.status in ("queued", "running")
    assert any("queue 'lender' needs its nominal quota back" in e.reason for e in victim.events)
    assert [e.to_status for e in victim.events][:6] == ["queued", "admitted", "running", "running", "preempted",
                                                         "queued"]
    assert all(scheduler.get(job.id).preempted_count == 0 for job in borrowed if job.id != victim.id)


def test_a_queue_over_its_usage_budget_holds_its_jobs(scheduler: Scheduler) -> None:
    scheduler.apply_queues({"name": "thrifty", "team": "t", "nominal": {"cpu": 4, "memory_gb": 16},
                            "budget": {"window": "1d", "cpu_hours": 0.00001}})
    first = scheduler.submit({"command": command("sum(range(3_000_000))"), "queue": "thrifty", "team": "t"})
    assert scheduler.wait(first.id, timeout=60).status == "succeeded"
    second = scheduler.submit({"command": command("print(1)"), "queue": "thrifty", "team": "t"})
    explanation = scheduler.explain(second.id)
    assert explanation.code == "budget"
    assert "Team t's queue 'thrifty' used" in explanation.message
    assert "of its 1e-05 CPU-hour budget in the last 1d" in explanation.message
    scheduler.tick()
    assert scheduler.get(second.id).status == "queued"


def test_a_restarted_scheduler_picks_up_a_running_job(scheduler_settings: Settings) -> None:
    scheduler_settings.home.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(scheduler_settings.catalog_url)
    first = Scheduler(catalog, scheduler_settings)
    job = first.submit({"command": command("import time; time.sleep(2); print('finished', flush=True)")})
    first.tick()
    assert first.get(job.id).status == "running"
    first.close()  # the control plane goes away; the job keeps running under its supervisor
    second = Scheduler(catalog, scheduler_settings)
    second.start()
    try:
        done = second.wait(job.id, timeout=60)
    finally:
        second.close()
        catalog.close()
    assert done.status == "succeeded" and done.attempts == 1
    assert "finished" in "".join(second.logs(job.id))


def test_only_one_scheduler_leads_a_catalog(scheduler_settings: Settings) -> None:
    scheduler_settings.home.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(scheduler_settings.catalog_url)
    one, two = Scheduler(catalog, scheduler_settings), Scheduler(catalog, scheduler_settings)
    try:
        assert one.leader.try_acquire() is True
        assert two.leader.try_acquire() is False
        one.leader.release()
        assert two.leader.try_acquire() is True
    finally:
        one.close()
        two.close()
        catalog.close()
