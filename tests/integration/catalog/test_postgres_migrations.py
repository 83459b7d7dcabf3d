"""The catalog on a real PostgreSQL: migrations up/down and concurrent start under the advisory lock."""

from __future__ import annotations

import multiprocessing

import pytest
import sqlalchemy as sa

from recplane.catalog import Catalog, current_revision, downgrade, head_revision, migrate
from recplane.catalog.tables import Base

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def _open(url: str) -> str | None:
    return current_revision(Catalog(url).engine)


def test_postgres_catalog_migrates_up_and_down(fresh_postgres_url: str) -> None:
    catalog = Catalog(fresh_postgres_url)
    tables = set(sa.inspect(catalog.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    downgrade(catalog.engine, "base")
    assert set(sa.inspect(catalog.engine).get_table_names()) <= {"alembic_version"}
    migrate(catalog.engine)
    assert current_revision(catalog.engine) == head_revision()
    catalog.close()


def test_concurrent_start_on_postgres_is_safe(fresh_postgres_url: str) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert pool.map(_open, [fresh_postgres_url] * 4) == [head_revision()] * 4
