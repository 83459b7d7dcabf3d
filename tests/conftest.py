"""Shared fixtures: service URLs (skip locally when unset, fail on CI) and fresh recplane homes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.fixtures.server import ServerProcess

from recplane.config import Settings


def _service_url(variable: str, what: str) -> str:
    url = os.environ.get(variable)
    if url:
        return url
    message = f"{what} tests need {variable} (e.g. set by .ci/run)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; on CI a missing service is a failure, not a skip")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """Base URL of the test PostgreSQL server (database `test`)."""
    return _service_url("RECPLANE_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def nats_url() -> str:
    """URL of the test NATS JetStream server."""
    return _service_url("RECPLANE_TEST_NATS_URL", "NATS")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test Redis server."""
    return _service_url("RECPLANE_TEST_REDIS_URL", "Redis")


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A throw-away PostgreSQL database, dropped after the test."""
    import sqlalchemy as sa

    name = f"recplane_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base, _, _ = postgres_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for an embedded home inside the test's tmp folder (fast group commits)."""
    return Settings(home=tmp_path / "home", group_commit_max_wait_ms=2.0)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real server processes on free loopback ports; every one is stopped after the test."""
    started: list[ServerProcess] = []

    def start(home: Path | None = None, *, dev: bool = False, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(home=home or tmp_path / "home", dev=dev, env=env or {})
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test: tiny tensors on a busy 2-core machine train many times faster."""
    import torch  # here, not at the top: most tests never load torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
