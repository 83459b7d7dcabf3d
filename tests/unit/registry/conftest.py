"""Registry fixtures: one real exported model per session, and a fresh catalog, run store and registry per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.registry import RegistryHome, model_folder, open_home

from recplane.config import Settings

__all__ = ["home", "model_folder"]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[RegistryHome]:
    """A fresh SQLite home."""
    opened = open_home(Settings(home=tmp_path / "home"))
    yield opened
    opened.catalog.close()
