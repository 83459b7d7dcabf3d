"""The dataset service with its catalog on PostgreSQL: create, evolve, read and history end to end."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
from tests.fixtures.lake import append, rating_rows, ratings_spec, with_columns

from recplane.auth import ADMIN, Principal
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import Forbidden, SchemaChangeRefused
from recplane.lake import DatasetService

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def pg_service(fresh_postgres_url: str, settings: Settings) -> Iterator[DatasetService]:
    """A dataset service whose catalog is a throw-away PostgreSQL database (dropped afterwards)."""
    on_postgres = settings.model_copy(update={"database_url": fresh_postgres_url})
    catalog = Catalog(on_postgres.catalog_url)
    yield DatasetService(catalog, on_postgres)
    catalog.close()


def test_create_apply_read_and_history_on_postgres(pg_service: DatasetService) -> None:
    info = pg_service.create(ratings_spec(), principal=Principal("recsys"), author="alice")
    assert (info.schema_version, info.current_version) == (1, 0)
    append(pg_service, "ratings", rating_rows(3), author="ingest")
    added = pg_service.apply(with_columns(ratings_spec(), genre="string"), principal=ADMIN, author="bob")
    widened = pg_service.apply(
        with_columns(ratings_spec(), genre="string", rating="float64"), principal=ADMIN, author="bob"
    )
    assert (added.schema_version, widened.schema_version, widened.delta_version) == (2, 3, 3)
    now = pg_service.read("ratings", principal=ADMIN)
    assert now.schema.field("rating").type == pa.float64() and now.column("genre").null_count == 3
    assert pg_service.read("ratings", principal=ADMIN, version=1).schema.field("rating").type == pa.float32()
    history = pg_service.history("ratings", principal=ADMIN)
    assert [(v.version, v.operation, v.schema_version, v.author) for v in history] == [
        (3, "schema-change", 3, "bob"),
        (2, "schema-change", 2, "bob"),
        (1, "append", 1, "ingest"),
        (0, "create", 1, "alice"),
    ]
    names = [d.name for d in pg_service.list(principal=Principal("recsys"))]
    assert names == ["ratings", "ratings__rejected"]


def test_refusals_and_ownership_hold_on_postgres(pg_service: DatasetService) -> None:
    pg_service.create(ratings_spec(), principal=ADMIN)
    with pytest.raises(SchemaChangeRefused):
        pg_service.apply(with_columns(ratings_spec(), item_id="string"), principal=ADMIN)
    with pytest.raises(Forbidden):
        pg_service.read("ratings", principal=Principal("growth"))
    assert pg_service.get("ratings", principal=ADMIN).schema_version == 1
