"""The scheduler on a real PostgreSQL catalog: migration 0005 down and up, a job end to end with its ledger row,
conditional status changes under a race, and one leader per catalog through the advisory lock."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.fixtures.scheduler.waiting import command

from recplane.catalog import Catalog, current_revision, downgrade, head_revision, migrate
from recplane.config import Settings
from recplane.scheduler import Scheduler
from recplane.scheduler.store import Transition

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(180)]


@pytest.fixture
def pg_settings(fresh_postgres_url: str, tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return Settings(home=home, database_url=fresh_postgres_url, scheduler_capacity_cpu=2,
                    scheduler_capacity_memory_gb=8, scheduler_interval_seconds=0.1, scheduler_grace_seconds=3)


def test_scheduler_tables_migrate_down_and_up_on_postgres(pg_settings: Settings) -> None:
    catalog = Catalog(pg_settings.catalog_url)
    downgrade(catalog.engine, "0004")
    tables = set(sa.inspect(catalog.engine).get_table_names())
    assert not {"jobs", "job_events", "queues", "job_usage"} & tables
    migrate(catalog.engine)
    assert {"jobs", "job_events", "queues", "job_usage"} <= set(sa.inspect(catalog.engine).get_table_names())
    assert current_revision(catalog.engine) == head_revision()
    catalog.close()


def test_a_job_runs_and_is_accounted_on_postgres(pg_settings: Settings) -> None:
    catalog = Catalog(pg_settings.catalog_url)
    scheduler = Scheduler(catalog, pg_settings)
    scheduler.apply_queues({"name": "q", "team": "t", "nominal": {"cpu": 2, "memory_gb": 8}})
    job = scheduler.submit({"command": command("print('on postgres', flush=True)"), "queue": "q", "team": "t"})
    scheduler.start()
    try:
        done = scheduler.wait(job.id, timeout=60)
    finally:
        scheduler.close()
    assert done.status == "succeeded" and "on postgres" in "".join(scheduler.logs(job.id))
    (row,) = scheduler.usage(group_by=["queue"]).rows
    assert row.group == {"queue": "q"} and row.attempts == 1 and row.wall_hours > 0
    (queue,) = scheduler.list_queues()
    assert queue.name == "q" and queue.running == 0 and queue.pending == 0
    catalog.close()


def test_only_one_of_racing_status_changes_wins(pg_settings: Settings) -> None:
    catalog = Catalog(pg_settings.catalog_url)
    scheduler = Scheduler(catalog, pg_settings)
    job = scheduler.submit({"command": command("print(1)")})
    change = [Transition(job.id, ("queued",), "cancelled", "race")]
    with ThreadPoolExecutor(8) as pool:
        winners = list(pool.map(lambda _: scheduler.store.apply(change), range(8)))
    assert sum(len(won) for won in winners) == 1
    assert [e.to_status for e in scheduler.get(job.id).events] == ["queued", "cancelled"]
    catalog.close()


def test_one_leader_per_postgres_catalog(pg_settings: Settings) -> None:
    first_catalog, second_catalog = Catalog(pg_settings.catalog_url), Catalog(pg_settings.catalog_url)
    first, second = Scheduler(first_catalog, pg_settings), Scheduler(second_catalog, pg_settings)
    try:
        assert first.leader.try_acquire() and first.is_leader
        assert not second.leader.try_acquire()
        with second_catalog.engine.connect() as admin:  # the leader's session dies (a crash, a network cut)
            killed = admin.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                "database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )).scalars().all()
        assert killed == [True]
        assert not first.is_leader  # it notices on its next check instead of scheduling on
        assert second.leader.try_acquire() and second.is_leader
    finally:
        first.close()
        second.close()
        first_catalog.close()
        second_catalog.close()
