"""Registry fixtures for real databases: the session's exported model and a home on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.registry import RegistryHome, model_folder, open_home

from recplane.config import Settings

__all__ = ["catalog_home", "model_folder"]


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryHome]:
    """A fresh home whose catalog is SQLite or a throw-away PostgreSQL database (skipped when none is set)."""
    url = request.getfixturevalue("fresh_postgres_url") if request.param == "postgres" else None
    opened = open_home(Settings(home=tmp_path / "home", database_url=url))
    yield opened
    opened.catalog.close()
