"""Migration 0004 (the model registry) goes down to 0003 and up again on SQLite without touching older tables."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from recplane.catalog import Catalog, current_revision, downgrade, head_revision, migrate

REGISTRY_TABLES = {"registered_models", "model_versions", "model_aliases", "alias_events"}


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_registry_tables_come_and_go_with_revision_0004(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    assert _tables(catalog.engine) >= REGISTRY_TABLES
    downgrade(catalog.engine, "0003")
    assert not REGISTRY_TABLES & _tables(catalog.engine)
    assert {"datasets", "training_runs", "feature_definitions"} <= _tables(catalog.engine)
    migrate(catalog.engine)
    assert _tables(catalog.engine) >= REGISTRY_TABLES
    assert current_revision(catalog.engine) == head_revision()
    uniques = {tuple(u["column_names"]) for u in sa.inspect(catalog.engine).get_unique_constraints("model_versions")}
    assert ("name", "version") in uniques
    catalog.close()
