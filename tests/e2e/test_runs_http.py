"""Training runs over REST on a real server: team isolation (403), not found (404), remote equals embedded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.fixtures.runs import record_tiny_run
from tests.fixtures.server import ServerProcess

from recplane import Client
from recplane.auth import Principal, create_token
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidInput, NotFound
from recplane.training.runs import RunRecord, RunStore

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_torch_thread")]




def _record_runs(home: Path) -> tuple[list[RunRecord], RunRecord, dict[str, str]]:
    """Two runs of team ads, one of team search, and a token per team."""
    settings = Settings(home=home)
    catalog = Catalog(settings.catalog_url)
    store = RunStore(catalog, settings.artifacts_root)
    ads = Principal(team="ads")
    ads_runs = [record_tiny_run(store, principal=ads, team="ads", lr=lr, group="study") for lr in (0.001, 0.05)]
    search_run = record_tiny_run(store, team="search", dataset="queries")
    tokens = {team: create_token(catalog, team).secret or "" for team in ("ads", "search")}
    catalog.close()
    return ads_runs, search_run, tokens


def test_runs_over_rest_stay_inside_the_team_and_match_embedded(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    ads_runs, search_run, tokens = _record_runs(home)
    server = server_factory(home)
    ads = Client(server.url, tokens["ads"])
    search = Client(server.url, tokens["search"])

    assert [run.id for run in ads.list_runs()] == [ads_runs[1].id, ads_runs[0].id]
    assert [run.id for run in search.list_runs()] == [search_run.id]
    assert [run.id for run in ads.list_runs(group="study", status="finished", limit=1)] == [ads_runs[1].id]
    assert ads.list_runs(dataset="queries") == []
    with pytest.raises(Forbidden, match="belongs to team 'ads'"):
        search.get_run(ads_runs[0].id)
    with pytest.raises(Forbidden):
        search.compare_runs([search_run.id, ads_runs[0].id])
    with pytest.raises(NotFound):
        ads.get_run("missing")
    with pytest.raises(InvalidInput):
        ads.compare_runs([ads_runs[0].id])
    with pytest.raises(InvalidInput):
        ads.list_runs(status="done")
    assert httpx.get(f"{server.url}/v1/runs").status_code == 401

    remote_run = ads.get_run(ads_runs[0].id)
    remote_comparison = ads.compare_runs([run.id for run in ads_runs])
    ads.close()
    search.close()
    server.stop()
    with Client(home=home) as embedded:
        assert embedded.get_run(ads_runs[0].id) == remote_run
        assert embedded.compare_runs([run.id for run in ads_runs]) == remote_comparison
        assert {run.id for run in embedded.list_runs()} == {search_run.id, *(run.id for run in ads_runs)}
    assert len(remote_run.epochs) == 2 and remote_run.metrics.test
