"""POST /v1/features/online against a real server: the same answer as embedded, team-checked, errors named."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from tests.fixtures.features_home import END, T0, prepare_purchases_home
from tests.fixtures.server import ServerProcess, team_token

from recplane import Client
from recplane.errors import Forbidden, InvalidInput

pytestmark = pytest.mark.e2e


def test_remote_lookups_match_embedded_and_are_team_checked(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    prepare_purchases_home(home)
    with Client(home=home) as embedded:
        local = embedded.online_features({"user_id": [1, 2, 3]}, "ranker", now=END)
    server = server_factory(home)
    with Client(server.url, team_token(home, "recsys")) as remote:
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
    with Client(server.url, team_token(home, "growth")) as other, pytest.raises(Forbidden, match="recsys"):
        other.online_features({"user_id": [1]}, "ranker")
    anonymous = httpx.post(
        f"{server.url}/v1/features/online", json={"entities": {"user_id": [1]}, "features": "ranker"}
    )
    assert anonymous.status_code == 401
    unknown = httpx.post(
        f"{server.url}/v1/features/online",
        json={"entities": {"user_id": [1]}, "features": ["user_stats:ghost"]},
        headers={"Authorization": f"Bearer {team_token(home, 'recsys')}"},
    )
    assert unknown.status_code == 422 and "ghost" in unknown.json()["error"]["message"]
