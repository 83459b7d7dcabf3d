"""Training runs on a real PostgreSQL: migration 0002 down and up, and a real recorded run read back."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.fixtures.runs import record_tiny_run

from recplane.auth import Principal
from recplane.catalog import Catalog, current_revision, downgrade, head_revision, migrate
from recplane.errors import Forbidden
from recplane.training.runs import RunStore

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def test_run_tables_migrate_down_to_0001_and_up_on_postgres(fresh_postgres_url: str) -> None:
    catalog = Catalog(fresh_postgres_url)
    downgrade(catalog.engine, "0001")
    assert not {"training_runs", "training_run_epochs"} & set(sa.inspect(catalog.engine).get_table_names())
    migrate(catalog.engine)
    assert current_revision(catalog.engine) == head_revision()
    catalog.close()


def test_a_recorded_run_round_trips_on_postgres(fresh_postgres_url: str, tmp_path: Path) -> None:
    catalog = Catalog(fresh_postgres_url)
    store = RunStore(catalog, tmp_path / "artifacts")
    ads = Principal(team="ads")
    first = record_tiny_run(store, principal=ads, team="ads", lr=0.01)
    second = record_tiny_run(store, principal=ads, team="ads", lr=0.05, group="study")
    assert first.status == "finished" and len(first.epochs) == 2 and first.metrics.test
    assert first.created_at.tzinfo is not None
    assert [run.id for run in store.list(principal=ads)] == [second.id, first.id]
    assert [run.id for run in store.list(group="study")] == [second.id]
    comparison = store.compare([first.id, second.id], principal=ads)
    assert {row.name for row in comparison.rows if row.kind == "param"} >= {"lr", "group"}
    with pytest.raises(Forbidden):
        store.get(first.id, principal=Principal(team="search"))
    catalog.close()
