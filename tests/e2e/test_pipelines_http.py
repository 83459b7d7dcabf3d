"""Pipelines over REST on a real server: a team applies and runs a pipeline through the remote client, the DAG and
step statuses come back over the API, another team gets 403, and embedded reads agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.fixtures.server import ServerProcess

from recplane import Client
from recplane.auth import create_token
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidSpec, NotFound

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FAST = {"RECPLANE_SCHEDULER_INTERVAL_SECONDS": "0.1", "RECPLANE_PIPELINES_INTERVAL_SECONDS": "0.1"}
SPEC = {
    "name": "remote-demo",
    "team": "ads",
    "params": {"n": 1},
    "steps": [
        {"name": "a", "uses": "noop", "inline": True, "with": {"value": "${params.n}"}},
        {"name": "b", "uses": "noop", "inline": True, "with": {"value": "${steps.a}"}},
        {"name": "c", "uses": "noop", "with": {"value": ["${steps.a}", "${steps.b}"]}},
    ],
}


def _tokens(home: Path) -> dict[str, str]:
    catalog = Catalog(Settings(home=home).catalog_url)
    tokens = {team: create_token(catalog, team).secret or "" for team in ("ads", "search")}
    catalog.close()
    return tokens


def test_a_team_runs_a_pipeline_over_http_and_sees_its_dag(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    tokens = _tokens(home)
    server = server_factory(home, env=FAST)
    with Client(url=server.url, token=tokens["ads"]) as ads:
        info = ads.apply_pipeline(SPEC)
        assert info.version == 1 and info.steps == ["a", "b", "c"]
        assert sorted(info.edges) == [("a", "b"), ("a", "c"), ("b", "c")]
        assert ads.apply_pipeline(SPEC).version == 1  # unchanged: no new version
        run = ads.run_pipeline("remote-demo", params={"n": 7}, wait=True, timeout=240)
        assert run.status == "succeeded", run.error
        assert run.step("c").outputs == [7, 7] and run.step("c").needs == ["a", "b"]
        assert [r.id for r in ads.list_pipeline_runs(pipeline="remote-demo")] == [run.id]
        with pytest.raises(InvalidSpec, match="depends on itself"):
            ads.apply_pipeline({"name": "bad", "team": "ads", "steps": [
                {"name": "x", "uses": "noop", "with": {"value": "${steps.x}"}}]})
        with pytest.raises(NotFound):
            ads.get_pipeline_run("000000000000")
    with Client(url=server.url, token=tokens["search"]) as search:
        with pytest.raises(Forbidden):
            search.get_pipeline_run(run.id)
        assert search.list_pipeline_runs() == []
    assert httpx.get(f"{server.url}/v1/pipelines").status_code == 401
    server.stop()
    with Client(settings=Settings(home=home)) as embedded:
        assert embedded.get_pipeline_run(run.id).step("c").outputs == [7, 7]
