"""A scheduler on a fresh home with a small fixed machine (so quotas bind) and a fast loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.scheduler import Scheduler


@pytest.fixture
def scheduler_settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        scheduler_capacity_cpu=4,
        scheduler_capacity_memory_gb=16,
        scheduler_grace_seconds=5,
        scheduler_interval_seconds=0.1,
    )


@pytest.fixture
def scheduler(scheduler_settings: Settings) -> Iterator[Scheduler]:
    """A scheduler with its loop running every 0.1 s; every job it started is killed at the end."""
    scheduler_settings.home.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(scheduler_settings.catalog_url)
    service = Scheduler(catalog, scheduler_settings)
    service.start()
    yield service
    service.close()
    for job in service.list_jobs(limit=1000):
        if not job.finished:
            service.cancel(job.id)
    catalog.close()
