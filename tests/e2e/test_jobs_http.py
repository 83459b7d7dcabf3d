"""Jobs over REST on a real `recplane server`: its scheduler loop runs the jobs; teams see only their own jobs and
usage; only administrators set quotas; logs stream; the remote client equals the embedded one."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.fixtures.scheduler.waiting import wait_for
from tests.fixtures.server import ServerProcess

from recplane import Client
from recplane.auth import create_token
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidSpec, NotFound

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ENV = {"RECPLANE_SCHEDULER_CAPACITY_CPU": "4", "RECPLANE_SCHEDULER_CAPACITY_MEMORY_GB": "8",
       "RECPLANE_SCHEDULER_INTERVAL_SECONDS": "0.1"}
QUEUES = {"queues": [{"name": "recsys", "team": "recsys", "nominal": {"cpu": 2, "memory_gb": 4}},
                     {"name": "ads", "team": "ads", "nominal": {"cpu": 2, "memory_gb": 4}}]}


def _prepare(home: Path) -> dict[str, str]:
    settings = Settings(home=home)
    with Client(settings=settings) as admin:
        admin.apply_queue(QUEUES)
    catalog = Catalog(settings.catalog_url)
    tokens = {team: create_token(catalog, team).secret or "" for team in ("recsys", "ads")}
    catalog.close()
    return tokens


def test_jobs_over_rest_run_on_the_servers_scheduler_and_stay_inside_the_team(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    tokens = _prepare(home)
    server = server_factory(home, env=ENV)
    recsys, ads = Client(server.url, tokens["recsys"]), Client(server.url, tokens["ads"])

    job = recsys.submit_job({"queue": "recsys", "name": "echo", "command": [
        sys.executable, "-c", "import time\nfor i in range(3):\n    print('line', i, flush=True); time.sleep(0.3)"]})
    assert job.team == "recsys" and job.status == "queued"  # the token's team, without saying it
    streamed = "".join(recsys.job_logs(job.id, follow=True))
    assert [line for line in streamed.splitlines() if line.startswith("line")] == ["line 0", "line 1", "line 2"]
    done = recsys.wait_job(job.id, timeout=60)
    assert done.status == "succeeded" and done.exit_code == 0

    assert [j.id for j in recsys.list_jobs()] == [job.id]
    assert ads.list_jobs() == []
    with pytest.raises(Forbidden, match="belongs to team 'recsys'"):
        ads.get_job(job.id)
    with pytest.raises(Forbidden):
        ads.submit_job({"queue": "recsys", "command": ["true"]})
    with pytest.raises(Forbidden, match="Only an administrator"):
        ads.apply_queue({"name": "ads", "team": "ads", "nominal": {"cpu": 4, "memory_gb": 8}})
    with pytest.raises(NotFound):
        recsys.get_job("missing")
    with pytest.raises(InvalidSpec, match="Unknown job kind"):
        recsys.submit_job({"kind": "shell", "command": ["true"]})

    report = recsys.usage(group_by=["team", "queue"])
    assert [row.group for row in report.rows] == [{"team": "recsys", "queue": "recsys"}]
    with pytest.raises(Forbidden):
        ads.usage(team="recsys")
    assert ads.usage().rows == []
    assert {queue.name for queue in recsys.list_queues()} == {"recsys", "ads"}

    with Client(settings=Settings(home=home)) as embedded:  # the same catalog, read in process
        assert embedded.get_job(job.id).model_dump() == recsys.get_job(job.id).model_dump()


def test_explain_and_cancel_over_rest(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    home = tmp_path / "home"
    tokens = _prepare(home)
    server = server_factory(home, env=ENV)
    recsys = Client(server.url, tokens["recsys"])
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    first = recsys.submit_job({"queue": "recsys", "resources": {"cpu": 2}, "command": sleeper})
    wait_for(lambda: recsys.get_job(first.id).status == "running", 60, "the first job to run")
    second = recsys.submit_job({"queue": "recsys", "resources": {"cpu": 1}, "command": sleeper})
    explanation = recsys.explain_job(second.id)
    assert explanation.status == "queued" and explanation.code == "quota"
    assert explanation.message.startswith("recsys's queue 'recsys' uses 2/2 CPU of its nominal quota")
    recsys.cancel_job(first.id)
    assert recsys.wait_job(first.id, timeout=60).status == "cancelled"
    recsys.cancel_job(second.id)
    assert recsys.wait_job(second.id, timeout=60).status == "cancelled"
    response = httpx.get(f"{server.url}/v1/jobs/{first.id}/logs", headers={"Authorization": f"Bearer {tokens['ads']}"})
    assert response.status_code == 403
