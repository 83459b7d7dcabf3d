"""Compaction and retention: fewer files with the same rows; old rows deleted, vacuumed and recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.fixtures.lake import T0, append, rating_rows, ratings_spec

from recplane.auth import ADMIN
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import NotFound
from recplane.lake import DatasetService


def live_files(service: DatasetService, name: str) -> int:
    return service.open(name, principal=ADMIN).table.live_files()


def test_compaction_reduces_files_and_keeps_every_version(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    for batch in range(5):
        append(service, "ratings", rating_rows(2, start=2 * batch))
    before = service.read("ratings", principal=ADMIN).sort_by("user_id")
    result = service.compact("ratings", principal=ADMIN, author="ops")
    assert (result.files_removed, result.files_added, result.version) == (5, 1, 6)
    assert live_files(service, "ratings") == 1
    assert service.read("ratings", principal=ADMIN).sort_by("user_id").equals(before)
    assert service.read("ratings", principal=ADMIN, version=2).num_rows == 4
    entry = service.history("ratings", principal=ADMIN)[0]
    assert (entry.operation, entry.author, entry.rows_added, entry.rows_removed) == ("compact", "ops", 0, 0)


def test_compacting_a_compact_table_commits_nothing(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(3))
    result = service.compact("ratings", principal=ADMIN)
    assert (result.version, result.files_removed, result.details["committed"]) == (1, 0, False)


def service_compacting_after(settings: Settings, files: int) -> DatasetService:
    tuned = settings.model_copy(update={"compact_after_files": files})
    return DatasetService(Catalog(tuned.catalog_url), tuned)


def test_maybe_compact_waits_for_the_file_threshold(settings: Settings) -> None:
    service = service_compacting_after(settings, 3)
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(1))
    append(service, "ratings", rating_rows(1, start=1))
    assert service.maybe_compact("ratings") is None
    append(service, "ratings", rating_rows(1, start=2))
    result = service.maybe_compact("ratings")
    assert result is not None and result.files_removed == 3 and live_files(service, "ratings") == 1


def test_maybe_compact_is_off_at_zero(settings: Settings) -> None:
    service = service_compacting_after(settings, 0)
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(1))
    assert service.maybe_compact("ratings") is None


def test_retention_deletes_old_rows_and_records_it(service: DatasetService) -> None:
    service.create(ratings_spec(retention="30d"), principal=ADMIN)
    append(service, "ratings", rating_rows(10))  # one row per day from T0
    now = T0 + timedelta(days=35)  # cutoff T0+5d: days 0..4 are older
    result = service.enforce_retention("ratings", principal=ADMIN, now=now, author="ops")
    assert (result.operation, result.rows_removed) == ("retention", 5)
    assert result.details["vacuumed_files"] >= 1 and result.details["readable_from"] == 2
    kept = service.read("ratings", principal=ADMIN).column("user_id").to_pylist()
    assert sorted(kept) == [5, 6, 7, 8, 9]
    history = service.history("ratings", principal=ADMIN)
    operations = [(v.operation, v.rows_removed, v.author) for v in history]
    assert ("retention", 5, "ops") in operations and operations[0][0] == "vacuum"


def test_retention_vacuum_ends_time_travel_to_older_versions(service: DatasetService) -> None:
    service.create(ratings_spec(retention="30d"), principal=ADMIN)
    append(service, "ratings", rating_rows(10))
    result = service.enforce_retention("ratings", principal=ADMIN, now=T0 + timedelta(days=35))
    with pytest.raises(NotFound, match="can no longer be read: retention vacuumed its files"):
        service.read("ratings", principal=ADMIN, version=1)
    assert service.read("ratings", principal=ADMIN, version=result.details["delete_version"]).num_rows == 5


def test_retention_with_nothing_old_is_a_noop(service: DatasetService) -> None:
    service.create(ratings_spec(retention="30d"), principal=ADMIN)
    append(service, "ratings", rating_rows(3))
    result = service.enforce_retention("ratings", principal=ADMIN, now=T0 + timedelta(days=2))
    assert (result.version, result.rows_removed) == (1, 0)
    assert "nothing to do" in result.details["message"]


def test_retention_without_a_retention_period_is_a_noop(service: DatasetService) -> None:
    service.create(ratings_spec(), principal=ADMIN)
    append(service, "ratings", rating_rows(3))
    result = service.enforce_retention("ratings", principal=ADMIN)
    assert (result.version, result.rows_removed) == (1, 0)
    assert "no retention" in result.details["message"]
