"""POST /v1/features/online against a real server: the same answer as embedded, team-checked, errors named."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tests.fixtures.server import ServerProcess

from recplane import Client
from recplane.auth import create_token
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidInput

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 1, 1, tzinfo=UTC)
END = T0 + timedelta(days=2)
DEFINITIONS = """
entities: [{name: user, join_keys: [user_id]}]
feature_views:
  - name: user_stats
    entities: [user]
    source: purchases
    ttl: 1d
    features:
      - price
      - {name: buys_7d, agg: count, window: 7d}
      - {name: last_prices, agg: last_n, column: price, n: 2, window: 7d}
feature_services: [{name: ranker, features: ["user_stats:*"]}]
"""


def _prepare(home: Path) -> None:
    """Data, definitions and a materialization, written with an embedded client into the server's home."""
    with Client(home=home) as client:
        client.create_dataset(
            {
                "name": "purchases",
                "team": "recsys",
                "event_time": "ts",
                "columns": {"user_id": "int64", "price": "float64", "ts": "timestamp"},
            }
        )
        client.ingest(
            "purchases",
            [
                {"user_id": 1, "price": 2.0, "ts": T0 + timedelta(hours=30)},
                {"user_id": 1, "price": 5.0, "ts": T0 + timedelta(hours=40)},
                {"user_id": 2, "price": 7.0, "ts": T0 + timedelta(hours=1)},  # older than the 1d TTL at END
            ],
        )
        client.apply_features(DEFINITIONS)
        client.materialize(end=END)


def _token(home: Path, team: str) -> str:
    catalog = Catalog(Settings(home=home).catalog_url)
    secret = create_token(catalog, team).secret
    catalog.close()
    assert secret
    return secret


def test_remote_lookups_match_embedded_and_are_team_checked(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    _prepare(home)
    with Client(home=home) as embedded:
        local = embedded.online_features({"user_id": [1, 2, 3]}, "ranker", now=END)
    server = server_factory(home)
    with Client(server.url, _token(home, "recsys")) as remote:
        over_http = remote.online_features([{"user_id": 1}, {"user_id": 2}, {"user_id": 3}], "ranker", now=END)
        assert over_http.to_dict() == local.to_dict()
        assert over_http.values == {
            "price": [5.0, None, None],
            "buys_7d": [2, 1, 0],
            "last_prices": [[2.0, 5.0], [7.0], []],
        }
        assert over_http.statuses == ["ok", "expired", "missing"]
        assert over_http.event_times["user_stats"][0] == T0 + timedelta(hours=40)
        with pytest.raises(InvalidInput, match="nope"):
            remote.online_features({"user_id": [1]}, ["user_stats:nope"])
    with Client(server.url, _token(home, "growth")) as other, pytest.raises(Forbidden, match="recsys"):
        other.online_features({"user_id": [1]}, "ranker")
    anonymous = httpx.post(
        f"{server.url}/v1/features/online", json={"entities": {"user_id": [1]}, "features": "ranker"}
    )
    assert anonymous.status_code == 401
    unknown = httpx.post(
        f"{server.url}/v1/features/online",
        json={"entities": {"user_id": [1]}, "features": ["user_stats:ghost"]},
        headers={"Authorization": f"Bearer {_token(home, 'recsys')}"},
    )
    assert unknown.status_code == 422 and "ghost" in unknown.json()["error"]["message"]
