"""The model registry over REST on a real server: a team registers and promotes its models, another team gets 403,
no token gets 401, and what the remote client saw equals what an embedded client reads afterwards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from tests.fixtures.registry import default_metrics, finished_run, model_folder
from tests.fixtures.server import ServerProcess

from recplane import Client
from recplane.auth import Principal, create_token
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidInput, NotFound
from recplane.training.runs import RunRecord, RunStore

__all__ = ["model_folder"]

pytestmark = [pytest.mark.e2e]


def _prepare(home: Path, folder: Path) -> tuple[list[RunRecord], dict[str, str]]:
    """Two finished runs of team ads (the second one better), and a token per team."""
    settings = Settings(home=home)
    catalog = Catalog(settings.catalog_url)
    store = RunStore(catalog, settings.artifacts_root)
    ads = Principal(team="ads")
    runs = [
        finished_run(store, folder, principal=ads, team="ads", metrics=default_metrics(recall, loss), lr=lr)
        for recall, loss, lr in ((0.2, 0.5, 0.01), (0.3, 0.4, 0.05))
    ]
    tokens = {team: create_token(catalog, team).secret or "" for team in ("ads", "search")}
    catalog.close()
    return runs, tokens


def test_a_team_registers_and_promotes_its_models_over_rest_and_others_cannot(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, model_folder: Path
) -> None:
    home = tmp_path / "home"
    runs, tokens = _prepare(home, model_folder)
    server = server_factory(home)
    ads, search = Client(server.url, tokens["ads"]), Client(server.url, tokens["search"])

    first = ads.register_model("ads-mf", run_id=runs[0].id, description="baseline")
    second = ads.register_model("ads-mf", run_id=runs[1].id, tags={"ticket": "REC-7"})
    assert (first.version, second.version, first.team, first.created_by) == (1, 2, "ads", "team:ads")
    assert second.lineage.run_id == runs[1].id and second.metrics["test.recall@10"] == 0.3
    assert ads.set_model_alias("ads-mf", "production", 1, reason="baseline").to_version == 1
    ads.set_model_alias("ads-mf", "candidate", 2)
    before = datetime.now(UTC)
    promoted = ads.set_model_alias("ads-mf", "production", "candidate", reason="+0.1 recall@10")
    assert (promoted.from_version, promoted.to_version, promoted.actor) == (1, 2, "team:ads")
    assert ads.get_model_version("ads-mf", "production").version == 2
    assert ads.get_model_version("ads-mf").version == 2
    assert ads.get_model_alias("ads-mf", "production", at=before).version == 1
    comparison = ads.compare_model_versions("ads-mf", 1, "production")
    recall = next(row for row in comparison.metrics if row.name == "test.recall@10")
    assert recall.better == 2 and recall.delta == pytest.approx(0.1)
    assert ads.delete_model_alias("ads-mf", "candidate", reason="promoted").to_version is None
    assert [m.name for m in ads.list_models()] == ["ads-mf"]

    assert search.list_models() == []
    with pytest.raises(Forbidden, match="belongs to team 'ads'"):
        search.get_model("ads-mf")
    with pytest.raises(Forbidden):
        search.get_model_version("ads-mf", "production")
    with pytest.raises(Forbidden):
        search.set_model_alias("ads-mf", "production", 1, reason="hijack")
    with pytest.raises(Forbidden):
        search.model_alias_history("ads-mf")
    with pytest.raises(Forbidden):
        search.register_model("ads-mf", run_id=runs[0].id)
    with pytest.raises(NotFound):
        ads.get_model("ghost")
    with pytest.raises(InvalidInput):
        ads.set_model_alias("ads-mf", "latest", 1)
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    denied = httpx.get(f"{server.url}/v1/models/ads-mf", headers={"Authorization": f"Bearer {tokens['search']}"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"

    remote = (ads.get_model("ads-mf"), ads.list_model_versions("ads-mf"), ads.model_alias_history("ads-mf"))
    ads.close()
    search.close()
    server.stop()
    with Client(home=home) as embedded:
        assert embedded.list_model_versions("ads-mf") == remote[1]
        assert embedded.model_alias_history("ads-mf") == remote[2]
        assert embedded.get_model("ads-mf").aliases == remote[0].aliases == {"production": 2}
