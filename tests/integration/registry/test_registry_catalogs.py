"""The registry's catalog guarantees on SQLite and PostgreSQL: migration 0004 down and up, distinct version numbers
under concurrent registration, alias moves that never lose a step of their history, and team isolation."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.fixtures.registry import RegistryHome, finished_run

from recplane.auth import Principal
from recplane.catalog import current_revision, downgrade, head_revision, migrate
from recplane.errors import Forbidden

pytestmark = [pytest.mark.integration]

REGISTRY_TABLES = {"registered_models", "model_versions", "model_aliases", "alias_events"}


def _in_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_migration_0004_goes_down_and_up(catalog_home: RegistryHome) -> None:
    engine = catalog_home.catalog.engine
    downgrade(engine, "0003")
    assert not REGISTRY_TABLES & set(sa.inspect(engine).get_table_names())
    migrate(engine)
    assert set(sa.inspect(engine).get_table_names()) >= REGISTRY_TABLES
    assert current_revision(engine) == head_revision()


def test_concurrent_first_registrations_create_one_model_with_numbered_versions(
    catalog_home: RegistryHome, model_folder: Path
) -> None:
    registry = catalog_home.registry
    numbers: list[int] = []
    errors = _in_threads(6, lambda _: numbers.append(registry.register("race", artifact_uri=str(model_folder)).version))
    assert errors == []
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    assert [(m.name, m.version_count, m.latest_version) for m in registry.list_models()] == [("race", 6, 6)]
    for version in registry.list_versions("race"):
        assert (registry.local_path(version) / "manifest.json").is_file()


def test_concurrent_alias_moves_keep_a_gapless_history(catalog_home: RegistryHome, model_folder: Path) -> None:
    registry = catalog_home.registry
    for _ in range(3):
        registry.register("mf", artifact_uri=str(model_folder))

    def flip(index: int) -> None:
        for step in range(4):
            registry.set_alias("mf", "production", 1 + (index + step) % 3, reason=f"thread {index} step {step}")

    assert _in_threads(4, flip) == []
    events = list(reversed(registry.alias_history("mf", "production")))
    assert events[0].from_version is None
    for before, after in itertools.pairwise(events):
        assert after.from_version == before.to_version and after.to_version != before.to_version
    assert registry.resolve("mf", "production").version == events[-1].to_version
    assert registry.get_alias("mf", "production", at=datetime.now(UTC)).version == events[-1].to_version


def test_teams_only_reach_their_own_models(catalog_home: RegistryHome, model_folder: Path) -> None:
    ads, search = Principal(team="ads"), Principal(team="search")
    run = finished_run(catalog_home.runs, model_folder, principal=ads, team="ads")
    version = catalog_home.registry.register("ads-mf", run_id=run.id, principal=ads)
    assert version.lineage.run_id == run.id and version.created_at.tzinfo is not None
    assert catalog_home.registry.list_models(principal=search) == []
    with pytest.raises(Forbidden):
        catalog_home.registry.resolve("ads-mf", principal=search)
    with pytest.raises(Forbidden):
        catalog_home.registry.set_alias("ads-mf", "production", 1, principal=search)
