"""Catalog migrations: up and down on SQLite, schema equal to the ORM tables, safe concurrent start."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import sqlalchemy as sa

from recplane.catalog import Catalog, current_revision, downgrade, head_revision, migrate
from recplane.catalog.tables import Base


def _table_columns(engine: sa.Engine) -> dict[str, set[str]]:
    inspector = sa.inspect(engine)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()
            if t != "alembic_version"}


def test_migrated_schema_matches_the_orm_tables(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    expected = {name: {c.name for c in table.columns} for name, table in Base.metadata.tables.items()}
    assert _table_columns(catalog.engine) == expected
    assert current_revision(catalog.engine) == head_revision()


def test_downgrade_to_base_and_upgrade_again(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    downgrade(catalog.engine, "base")
    assert _table_columns(catalog.engine) == {}
    assert current_revision(catalog.engine) is None
    migrate(catalog.engine)
    assert set(_table_columns(catalog.engine)) == set(Base.metadata.tables)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    with catalog.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def _open(url: str) -> str | None:
    catalog = Catalog(url)
    return current_revision(catalog.engine)


def test_processes_opening_a_new_catalog_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        revisions = pool.map(_open, [url] * 4)
    assert revisions == [head_revision()] * 4
