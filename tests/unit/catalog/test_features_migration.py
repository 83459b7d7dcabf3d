"""Migration 0003 (feature definitions) goes down to 0002 and up again on SQLite without touching older tables."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from recplane.catalog import Catalog, current_revision, downgrade, head_revision, migrate


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_feature_definitions_table_comes_and_goes_with_revision_0003(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    assert "feature_definitions" in _tables(catalog.engine)
    downgrade(catalog.engine, "0002")
    assert "feature_definitions" not in _tables(catalog.engine)
    assert {"datasets", "training_runs"} <= _tables(catalog.engine)
    assert current_revision(catalog.engine) == "0002"
    migrate(catalog.engine)
    assert "feature_definitions" in _tables(catalog.engine)
    assert current_revision(catalog.engine) == head_revision()
