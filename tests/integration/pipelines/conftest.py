"""A platform with the scheduler and pipeline loops running fast, on a fresh home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recplane.config import Settings
from recplane.runtime import Runtime


def fast_settings(home: Path, **extra: object) -> Settings:
    """Small fixed capacity, 0.1 s loops, schedules and triggers checked every 0.2 s."""
    return Settings(home=home, scheduler_capacity_cpu=4, scheduler_capacity_memory_gb=16, scheduler_grace_seconds=5,
                    scheduler_interval_seconds=0.1, pipelines_interval_seconds=0.1, pipelines_trigger_seconds=0.2,
                    group_commit_max_wait_ms=2.0, **extra)  # type: ignore[arg-type]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """The platform with both loops started; step jobs still running at the end are cancelled."""
    platform = Runtime(fast_settings(tmp_path / "home"))
    platform.scheduler.start()
    platform.pipelines.start()
    yield platform
    platform.pipelines.close()
    for job in platform.scheduler.list_jobs(limit=1000):
        if not job.finished:
            platform.scheduler.cancel(job.id)
    platform.close()
