"""Pipelines on a PostgreSQL catalog: migration 0006 down and up, and runs (segments, process steps, the cache,
the pipeline leader's advisory lock) on the same code path as SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.integration.pipelines.conftest import fast_settings

from recplane.catalog import Catalog, current_revision, downgrade, migrate
from recplane.runtime import Runtime

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(300)]

STEPS = "tests.fixtures.pipelines.steps"
TABLES = {"pipelines", "pipeline_runs", "step_runs", "step_cache"}


def _migrates_down_and_up(url: str) -> None:
    catalog = Catalog(url)
    downgrade(catalog.engine, "0005")
    assert not TABLES & set(sa.inspect(catalog.engine).get_table_names())
    assert current_revision(catalog.engine) == "0005"
    migrate(catalog.engine)
    assert set(sa.inspect(catalog.engine).get_table_names()) >= TABLES
    catalog.close()


def test_the_pipelines_migration_goes_down_and_up_on_sqlite(tmp_path: Path) -> None:
    _migrates_down_and_up(f"sqlite:///{tmp_path / 'c.db'}")


def test_the_pipelines_migration_goes_down_and_up_on_postgres(fresh_postgres_url: str) -> None:
    _migrates_down_and_up(fresh_postgres_url)


@pytest.fixture
def postgres_runtime(fresh_postgres_url: str, tmp_path: Path) -> Iterator[Runtime]:
    platform = Runtime(fast_settings(tmp_path / "home", database_url=fresh_postgres_url))
    platform.scheduler.start()
    platform.pipelines.start()
    yield platform
    platform.pipelines.close()
    for job in platform.scheduler.list_jobs(limit=1000):
        if not job.finished:
            platform.scheduler.cancel(job.id)
    platform.close()


def test_a_pipeline_runs_and_caches_on_postgres(postgres_runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    service = postgres_runtime.pipelines
    service.apply({"name": "pg", "steps": [
        {"name": "make", "uses": f"{STEPS}:make_number", "with": {"log": str(log), "value": 4}},
        {"name": "double", "uses": f"{STEPS}:double", "inline": True,
         "with": {"log": str(log), "value": "${steps.make}"}},
        {"name": "describe", "uses": f"{STEPS}:describe", "inline": True,
         "with": {"log": str(log), "value": "${steps.double}"}},
    ]})
    run = service.wait(service.run("pg").id, timeout=180)
    assert run.status == "succeeded", run.error
    assert run.step("describe").outputs == {"label": "result", "value": 8}
    assert run.step("double").job_id == run.step("describe").job_id  # one inline segment
    assert service.runner.leader.held  # the advisory lock on PostgreSQL
    again = service.wait(service.run("pg").id, timeout=60)
    assert {s.status for s in again.steps} == {"cached"}
    assert log.read_text().splitlines() == ["make_number 4", "double 4", "describe 8"]
