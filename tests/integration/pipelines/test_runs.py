"""Pipeline runs through the real scheduler: process and inline steps, caching, retries, failures, cancel,
backfills, dataset triggers and cron schedules."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from recplane.auth import ADMIN
from recplane.errors import InvalidInput
from recplane.runtime import Runtime

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STEPS = "tests.fixtures.pipelines.steps"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _three_steps(log: Path, value: int = 3) -> dict[str, object]:
    return {
        "name": "three",
        "params": {"value": value},
        "steps": [
            {"name": "make", "uses": f"{STEPS}:make_number", "with": {"log": str(log), "value": "${params.value}"}},
            {"name": "double", "uses": f"{STEPS}:double", "inline": True,
             "with": {"log": str(log), "value": "${steps.make}"}},
            {"name": "describe", "uses": f"{STEPS}:describe", "inline": True,
             "with": {"log": str(log), "value": "${steps.double}", "label": "twice ${params.value}"}},
        ],
    }


def test_a_three_step_pipeline_runs_as_jobs_then_reruns_from_cache(runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    service = runtime.pipelines
    service.apply(_three_steps(log))
    first = service.wait(service.run("three").id, timeout=180)
    assert first.status == "succeeded", first.error
    assert first.step("describe").outputs == {"label": "twice 3", "value": 6}
    assert all(s.job_id for s in first.steps) and first.step("double").inline
    jobs = {runtime.scheduler.get(s.job_id).queue for s in first.steps if s.job_id}  # type: ignore[arg-type]
    assert jobs == {"default", "default.inline"}
    assert _lines(log) == ["make_number 3", "double 3", "describe 6"]

    again = service.wait(service.run("three").id, timeout=60)
    assert again.status == "succeeded" and {s.status for s in again.steps} == {"cached"}
    assert {s.cached_from for s in again.steps} == {first.id}
    assert len(_lines(log)) == 3  # nothing ran again

    changed = service.wait(service.run("three", params={"value": 5}).id, timeout=180)
    assert [s.status for s in changed.steps] == ["succeeded", "succeeded", "succeeded"]
    assert changed.step("describe").outputs == {"label": "twice 5", "value": 10}


def test_a_failing_step_is_retried_by_its_job_and_a_failure_skips_the_rest(runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    service = runtime.pipelines
    service.apply({"name": "retrying", "steps": [
        {"name": "flaky", "uses": f"{STEPS}:flaky", "max_retries": 1, "backoff_seconds": 0.1, "inline": True,
         "with": {"log": str(log), "marker": str(tmp_path / "marker")}},
        {"name": "after", "uses": f"{STEPS}:double", "inline": True, "with": {"log": str(log), "value": 1},
         "needs": ["flaky"]},
    ]})
    run = service.wait(service.run("retrying").id, timeout=120)
    assert run.status == "succeeded" and run.step("flaky").attempts == 2
    assert _lines(log) == ["flaky failed", "flaky succeeded", "double 1"]

    service.apply({"name": "failing", "steps": [
        {"name": "bad", "uses": f"{STEPS}:always_fails", "inline": True, "with": {"log": str(log)}},
        {"name": "never", "uses": f"{STEPS}:double", "inline": True, "with": {"log": str(log), "value": 2},
         "needs": ["bad"]},
    ]})
    failed = service.wait(service.run("failing").id, timeout=120)
    assert failed.status == "failed" and "this step always fails" in (failed.error or "")
    assert failed.step("bad").status == "failed" and failed.step("never").status == "skipped"
    assert "double 2" not in _lines(log)


def test_a_backfill_starts_one_run_per_day(runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    service = runtime.pipelines
    service.apply({"name": "daily", "params": {"date": "2026-01-01"}, "steps": [
        {"name": "day", "uses": f"{STEPS}:for_day", "inline": True,
         "with": {"log": str(log), "date": "${params.date}"}},
    ]})
    runs = service.backfill("daily", date(2026, 11, 1), date(2026, 11, 3))
    assert [r.params["date"] for r in runs] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert {r.trigger for r in runs} == {"backfill"}
    finished = [service.wait(r.id, timeout=60) for r in runs]
    assert {r.status for r in finished} == {"succeeded"}
    assert sorted(_lines(log)) == ["day 2026-11-01", "day 2026-11-02", "day 2026-11-03"]
    with pytest.raises(InvalidInput, match="no param 'day'"):
        service.backfill("daily", date(2026, 11, 1), date(2026, 11, 2), param="day")


def _ratings(runtime: Runtime) -> None:
    runtime.datasets.create({"name": "events", "columns": {"user_id": "int64", "item_id": "int64",
                                                             "ts": "timestamp"}, "event_time": "ts"}, principal=ADMIN)


def _ingest(runtime: Runtime, rows: int) -> int:
    now = datetime.now(UTC)
    table = pa.table({"user_id": list(range(rows)), "item_id": list(range(rows)),
                      "ts": pa.array([now] * rows, pa.timestamp("us", tz="UTC"))})
    return runtime.ingestion.ingest("events", table, principal=ADMIN).version


def test_a_new_dataset_version_triggers_a_run_that_reads_that_version(runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    _ratings(runtime)
    _ingest(runtime, 3)
    service = runtime.pipelines
    service.apply({"name": "on-events", "triggers": [{"dataset": "events"}], "steps": [
        {"name": "count", "uses": f"{STEPS}:row_count", "inline": True, "with": {"log": str(log), "data": "events"}},
    ]})
    assert service.list_runs(pipeline="on-events") == []  # versions before the apply start nothing
    version = _ingest(runtime, 2)
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    while not service.list_runs(pipeline="on-events") and datetime.now(UTC) < deadline:
        runtime.pipelines.runner.wake()
        import time

        time.sleep(0.1)
    (run,) = service.list_runs(pipeline="on-events")
    assert run.trigger == "dataset" and run.trigger_detail == {"dataset": "events", "version": version}
    done = service.wait(run.id, timeout=60)
    assert done.status == "succeeded"
    assert done.step("count").outputs == {"dataset": f"events@{version}", "rows": 5}
    assert done.step("count").inputs["data"] == {"$ref": "dataset", "name": "events", "version": version}


def test_a_cron_schedule_starts_one_run_per_due_slot(runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    service = runtime.pipelines
    service.apply({"name": "hourly", "schedule": "0 * * * *", "steps": [
        {"name": "noop", "uses": "noop", "inline": True},
    ]})
    runner = service.runner
    created = datetime.now(UTC)
    later = created.replace(minute=0, second=0, microsecond=0) + timedelta(hours=3, minutes=5)
    started = runner.fire_schedules(later)
    assert len(started) == 1  # three missed slots collapse into the newest
    run = service.get_run(started[0])
    assert run.trigger == "schedule"
    assert run.trigger_detail["scheduled_for"] == (later - timedelta(minutes=5)).isoformat()
    assert runner.fire_schedules(later) == []  # the slot ran already
    assert len(runner.fire_schedules(later + timedelta(hours=1))) == 1
    assert service.get("hourly").next_run_at is not None
    assert not log.exists()


def test_cancelling_a_run_stops_its_steps(runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    service = runtime.pipelines
    service.apply({"name": "long", "steps": [
        {"name": "slow", "uses": f"{STEPS}:slow", "with": {"log": str(log), "name": "slow", "seconds": 60}},
        {"name": "next", "uses": "noop", "needs": ["slow"], "inline": True},
    ]})
    run = service.run("long")
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    while service.get_run(run.id).step("slow").status not in ("running",) and datetime.now(UTC) < deadline:
        import time

        time.sleep(0.1)
    service.cancel_run(run.id)
    done = service.wait(run.id, timeout=60)
    assert done.status == "cancelled"
    assert done.step("slow").status == "cancelled" and done.step("next").status == "cancelled"
    assert "done slow" not in _lines(log)
