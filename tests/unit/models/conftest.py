"""Model tests run on one thread (see the ``one_torch_thread`` fixture)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here."""
