"""Migration 0002 (training runs) goes down to 0001 and up again on SQLite without touching older tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from recplane.catalog import Catalog, current_revision, downgrade, head_revision, migrate

RUN_TABLES = {"training_runs", "training_run_epochs"}


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_training_run_tables_come_and_go_with_revision_0002(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    assert _tables(catalog.engine) >= RUN_TABLES
    with catalog.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO datasets (name, team, description, location, spec, schema_version, "
                "created_at, updated_at) VALUES ('d', 't', '', '/x', '{}', 1, '2026-01-01', "
                "'2026-01-01')"
            )
        )
    downgrade(catalog.engine, "0001")
    assert current_revision(catalog.engine) == "0001"
    assert not RUN_TABLES & _tables(catalog.engine)
    with catalog.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT name FROM datasets")).scalars().all() == ["d"]
    migrate(catalog.engine)
    assert current_revision(catalog.engine) == head_revision()
    assert _tables(catalog.engine) >= RUN_TABLES
    catalog.close()


def test_an_epoch_needs_an_existing_run_and_is_unique_per_epoch(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    insert_epoch = sa.text(
        "INSERT INTO training_run_epochs (run_id, epoch, loss, valid, seconds) VALUES (:run, 0, 0.5, '{}', 1.0)"
    )
    with pytest.raises(sa.exc.IntegrityError), catalog.engine.begin() as connection:
        connection.execute(insert_epoch, {"run": "missing"})
    with catalog.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO training_runs (id, name, team, model, status, config, params, recplane_version, metrics, "
                "artifacts_uri, tags, created_at) VALUES ('r1', 'n', 't', 'mf', 'running', '{}', '{}', '0', '{}', "
                "'/x', '{}', '2026-01-01')"
            )
        )
        connection.execute(insert_epoch, {"run": "r1"})
    with pytest.raises(sa.exc.IntegrityError), catalog.engine.begin() as connection:
        connection.execute(insert_epoch, {"run": "r1"})
    catalog.close()
