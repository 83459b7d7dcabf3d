"""Train-serve skew through a real server: lookups logged over HTTP, the report over REST and the CLI, and the
skew gauges on /metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from tests.fixtures.features_home import END, T0, prepare_purchases_home
from tests.fixtures.server import ServerProcess, team_token
from typer.testing import CliRunner

from recplane import Client
from recplane.cli import app
from recplane.errors import Forbidden
from recplane.features.online import open_online_store

pytestmark = pytest.mark.e2e


def _cli(server: ServerProcess, token: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--url", server.url, "--token", token, "features", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _gauge(metrics: str, name: str, feature: str) -> float:
    prefix = f'{name}{{feature="{feature}"}} '
    [line] = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(line[len(prefix) :])


def test_skew_of_logged_lookups_over_http_cli_and_metrics(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    prepare_purchases_home(home)
    server = server_factory(home)
    token = team_token(home, "recsys")
    since = T0.isoformat()
    with Client(server.url, token) as remote:
        clean = remote.online_features({"user_id": [1, 2, 3]}, "ranker", now=END, log=True)
        assert clean.request_id is not None and clean.statuses == ["ok", "expired", "missing"]
        assert remote.online_features({"user_id": [1]}, "ranker", now=END).request_id is None

        code, out = _cli(server, token, "skew", "--since", since, "--json")
        assert code == 0, out
        report = json.loads(out)
        assert (report["requests"], report["rows_compared"], report["mismatches"]) == (1, 9, 0)
        assert report["dataset"] == "feature_log"

        # Corrupt user 1's price in the online store the server reads (a newer created time wins).
        store = open_online_store("embedded", home=home)
        store.write(
            "user_stats",
            [{"user_id": 1, "price": 55.0, "ts": T0 + timedelta(hours=40), "created": END}],
            key_columns=["user_id"],
            feature_columns=["price"],
            event_time_column="ts",
            created_time_column="created",
        )
        store.close()
        skewed = remote.online_features([{"user_id": 1}, {"user_id": 2}, {"user_id": 3}], "ranker", now=END, log=True)
        assert skewed.values["price"][0] == 55.0

        over_sdk = remote.feature_skew(T0, features="ranker")
        price = over_sdk.feature("user_stats:price")
        assert (over_sdk.requests, price.rows_compared, price.mismatches) == (2, 6, 1)
        [example] = price.examples
        assert (example.request_id, example.entity, example.online, example.offline) == (
            skewed.request_id,
            {"user_id": 1},
            55.0,
            5.0,
        )
        assert over_sdk.feature("user_stats:buys_7d").mismatches == 0

    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.post(
        f"{server.url}/v1/features/skew", json={"since": "400d", "features": ["user_stats:price"]}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert [row["feature"] for row in response.json()["features"]] == ["user_stats:price"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert _gauge(metrics, "recplane_feature_skew_mismatch_rate", "user_stats:price") == pytest.approx(1 / 6)
    assert _gauge(metrics, "recplane_feature_skew_rows_compared", "user_stats:price") == 6
    assert _gauge(metrics, "recplane_feature_skew_mismatch_rate", "user_stats:last_prices") == 0.0

    code, out = _cli(server, token, "skew", "--since", since)
    assert code == 0, out
    assert (
        "Train-serve skew" in out and "user_stats:price" in out and "Differing values" in out and "55.0 vs 5.0" in out
    )
    assert "2 requests, 18 values compared, 1 differ" in out

    code, out = _cli(server, token, "skew", "--since", "1x")
    assert code != 0 and "--since" in out and "1d" in out
    bad = httpx.post(f"{server.url}/v1/features/skew", json={"since": "soon"}, headers=headers)
    assert bad.status_code == 422 and "soon" in bad.json()["error"]["message"]
    with Client(server.url, team_token(home, "growth")) as other, pytest.raises(Forbidden, match="feature_log"):
        other.feature_skew(timedelta(days=400))
