"""Migration 0005 (scheduler) goes down to 0004 and up again on SQLite without touching older tables."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from recplane.catalog import Catalog, current_revision, downgrade, head_revision, migrate

SCHEDULER_TABLES = {"jobs", "job_events", "queues", "job_usage"}


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_scheduler_tables_come_and_go_with_revision_0005(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    assert _tables(catalog.engine) >= SCHEDULER_TABLES
    downgrade(catalog.engine, "0004")
    assert not SCHEDULER_TABLES & _tables(catalog.engine)
    assert {"datasets", "training_runs", "model_versions"} <= _tables(catalog.engine)
    migrate(catalog.engine)
    assert _tables(catalog.engine) >= SCHEDULER_TABLES
    assert current_revision(catalog.engine) == head_revision()
