"""The scheduler service on a SQLite catalog, without running anything: submission rules, teams, cancel, retry,
explain, queues and usage permissions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recplane.auth import Principal
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidInput, InvalidSpec, NotFound
from recplane.scheduler import Scheduler
from recplane.scheduler.store import Transition

ADS, SEARCH = Principal(team="ads"), Principal(team="search")
TRUE = {"command": ["true"]}


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Scheduler]:
    settings = Settings(home=tmp_path / "home", scheduler_capacity_cpu=4, scheduler_capacity_memory_gb=8)
    settings.home.mkdir(parents=True)
    catalog = Catalog(settings.catalog_url)
    service = Scheduler(catalog, settings)
    service.apply_queues({"queues": [{"name": "ads", "team": "ads", "nominal": {"cpu": 2, "memory_gb": 4}},
                                     {"name": "search", "team": "search", "nominal": {"cpu": 2, "memory_gb": 4}}]})
    yield service
    service.close()
    catalog.close()


def test_a_team_submits_to_its_own_queue_as_itself(scheduler: Scheduler) -> None:
    job = scheduler.submit({**TRUE, "queue": "ads"}, principal=ADS)
    assert (job.team, job.queue, job.status, job.created_by) == ("ads", "ads", "queued", "team:ads")
    assert job.events[0].reason == "submitted by team:ads to queue 'ads'"
    with pytest.raises(Forbidden, match="Queue 'search' belongs to team 'search'"):
        scheduler.submit({**TRUE, "queue": "search"}, principal=ADS)
    with pytest.raises(Forbidden):
        scheduler.submit({**TRUE, "queue": "search", "team": "search"}, principal=ADS)
    with pytest.raises(NotFound, match="recplane queues apply"):
        scheduler.submit({**TRUE, "queue": "nowhere"})
    with pytest.raises(InvalidSpec, match="Unknown job kind"):
        scheduler.submit({**TRUE, "kind": "shell"})


def test_teams_see_only_their_jobs(scheduler: Scheduler) -> None:
    mine = scheduler.submit({**TRUE, "queue": "ads"}, principal=ADS)
    theirs = scheduler.submit({**TRUE, "queue": "search"}, principal=SEARCH)
    assert [job.id for job in scheduler.list_jobs(principal=ADS)] == [mine.id]
    assert {job.id for job in scheduler.list_jobs()} == {mine.id, theirs.id}
    with pytest.raises(Forbidden):
        scheduler.get(theirs.id, principal=ADS)
    with pytest.raises(Forbidden):
        scheduler.list_jobs(principal=ADS, team="search")
    with pytest.raises(Forbidden):
        scheduler.cancel(theirs.id, principal=ADS)


def test_cancel_and_retry(scheduler: Scheduler) -> None:
    job = scheduler.submit({**TRUE, "queue": "ads"}, principal=ADS)
    with pytest.raises(InvalidInput, match="only failed or cancelled jobs can be retried"):
        scheduler.retry(job.id)
    cancelled = scheduler.cancel(job.id, principal=ADS)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert scheduler.cancel(job.id).status == "cancelled"  # idempotent
    retried = scheduler.retry(job.id, principal=ADS)
    assert retried.status == "queued" and retried.attempts == 0
    assert [e.to_status for e in retried.events] == ["queued", "cancelled", "queued"]


def test_explain_a_waiting_job_and_a_finished_one(scheduler: Scheduler) -> None:
    big = scheduler.submit({**TRUE, "queue": "ads", "resources": {"cpu": 2}}, principal=ADS)
    small = scheduler.submit({**TRUE, "queue": "ads", "resources": {"cpu": 1}}, principal=ADS)
    assert scheduler.explain(big.id).message.startswith("It fits now and starts at the next scheduling round")
    scheduler.store.apply([Transition(big.id, ("queued",), "running", "pretend it runs", {"backend": "local"})])
    explanation = scheduler.explain(small.id)
    assert explanation.code == "quota"
    assert explanation.message == ("ads's queue 'ads' uses 2/2 CPU of its nominal quota and is in no cohort, so it "
                                   "cannot borrow; it needs 1 CPU, 1 GB memory.")
    scheduler.cancel(small.id)
    assert scheduler.explain(small.id).message == "Cancelled: cancelled by admin."


def test_queues_are_set_by_administrators_and_listed_with_use(scheduler: Scheduler) -> None:
    with pytest.raises(Forbidden, match="Only an administrator"):
        scheduler.apply_queues({"name": "ads", "team": "ads", "nominal": {"cpu": 99}}, principal=ADS)
    with pytest.raises(InvalidInput, match="backend 'mainframe'"):
        scheduler.apply_queues({"name": "x", "team": "x", "backend": "mainframe"})
    scheduler.submit({**TRUE, "queue": "ads"}, principal=ADS)
    (ads,) = [queue for queue in scheduler.list_queues() if queue.name == "ads"]
    assert (ads.pending, ads.running, ads.nominal.cpu) == (1, 0, 2)


def test_usage_stays_inside_the_team(scheduler: Scheduler) -> None:
    assert scheduler.usage(principal=ADS).rows == []
    with pytest.raises(Forbidden):
        scheduler.usage(principal=ADS, team="search")
    with pytest.raises(InvalidInput, match="Group usage by"):
        scheduler.usage(group_by=["colour"])
