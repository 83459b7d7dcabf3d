"""A real server process: tokens per team, 401/403, open health routes, metrics and OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.fixtures.server import ServerProcess, team_token

from recplane import Client
from recplane.errors import Forbidden, NotFound, Unauthenticated

pytestmark = pytest.mark.e2e

SPEC = {
    "name": "clicks",
    "team": "ads",
    "event_time": "ts",
    "columns": {"user_id": {"type": "int64", "nullable": False}, "item_id": "int64", "ts": "timestamp"},
}


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    return server_factory(tmp_path / "home")


def test_token_of_another_team_gets_403_on_its_dataset(server: ServerProcess) -> None:
    ads = Client(server.url, team_token(server.home, "ads"))
    search = Client(server.url, team_token(server.home, "search"))
    ads.create_dataset(SPEC)
    ads.ingest("clicks", [{"user_id": 1, "item_id": 2, "ts": "2026-11-23T10:00:00Z"}])
    with pytest.raises(Forbidden, match="belongs to team 'ads'"):
        search.read("clicks")
    with pytest.raises(Forbidden):
        search.ingest("clicks", [{"user_id": 1, "item_id": 2, "ts": "2026-11-23T10:00:00Z"}])
    with pytest.raises(Forbidden):
        search.create_dataset({**SPEC, "name": "stolen"})
    assert [d.name for d in search.list_datasets()] == []
    assert "clicks" in [d.name for d in ads.list_datasets()]
    response = httpx.get(f"{server.url}/v1/datasets/clicks", headers={"Authorization": "Bearer x"})
    assert response.status_code == 401


def test_every_v1_route_needs_a_token_but_health_does_not(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    response = httpx.get(f"{server.url}/v1/datasets")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    with pytest.raises(Unauthenticated):
        Client(server.url, "rp_wrong").list_datasets()
    schema = httpx.get(f"{server.url}/openapi.json").json()
    v1_paths = [path for path in schema["paths"] if path.startswith("/v1")]
    assert "/v1/datasets/{name}/events" in v1_paths
    for path in v1_paths:
        concrete = path.replace("{name}", "clicks")
        method = next(iter(schema["paths"][path]))
        assert httpx.request(method.upper(), f"{server.url}{concrete}").status_code == 401, path


def test_errors_cross_the_wire_as_the_same_class(server: ServerProcess) -> None:
    client = Client(server.url, team_token(server.home, "ads"))
    with pytest.raises(NotFound):
        client.read("does_not_exist")


def test_metrics_count_requests_per_route_and_ingested_rows(server: ServerProcess) -> None:
    client = Client(server.url, team_token(server.home, "ads"))
    client.create_dataset(SPEC)
    client.ingest("clicks", [{"user_id": 1, "item_id": 2, "ts": "2026-11-23T10:00:00Z"}, {"item_id": 3}])
    text = httpx.get(f"{server.url}/metrics").text
    assert 'recplane_http_requests_total{method="POST",route="/v1/datasets/{name}/events",status="200"}' in text
    assert 'recplane_ingest_rows_total{dataset="clicks",outcome="accepted"} 1.0' in text
    assert 'recplane_ingest_rows_total{dataset="clicks",outcome="rejected"} 1.0' in text
    assert "recplane_http_request_duration_seconds_bucket" in text


def test_dev_mode_skips_auth_on_loopback(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    dev = server_factory(tmp_path / "devhome", dev=True)
    assert httpx.get(f"{dev.url}/v1/whoami").json() == {"team": None, "admin": True}
