"""A training job on borrowed quota is preempted by the lending team's high-priority job, checkpoints, and resumes.

Real processes end to end: the train job is `python -m recplane.scheduler.entrypoint`, it gets SIGTERM from the
scheduler, saves at the trainer's next checkpoint and exits; once the lender's job is done it is admitted again and
continues from that checkpoint as a new run tagged ``resumed_from`` the preempted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.fixtures.runs import tiny_interactions
from tests.fixtures.scheduler.waiting import command, wait_for, wait_status

from recplane import Client
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.scheduler import Scheduler

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

RATINGS = {"name": "ratings", "event_time": "ts",
           "columns": {"user_id": "int64", "item_id": "int64", "ts": "timestamp"}}
TRAIN_SPEC = {
    "dataset": "ratings",
    "export": False,
    "train": {"model": "mf", "epochs": 6, "batch_size": 32, "lr": 0.05, "params": {"dim": 8}, "patience": None,
              "checkpoint_every_steps": 25, "seed": 7},
}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Scheduler]:
    """Two teams' queues in one cohort on a 4-CPU machine, a ratings dataset, and a running scheduler."""
    settings = Settings(home=tmp_path / "home", scheduler_capacity_cpu=4, scheduler_capacity_memory_gb=16,
                        scheduler_grace_seconds=60, scheduler_interval_seconds=0.2)
    with Client(settings=settings) as client:
        client.create_dataset(RATINGS)
        rows = tiny_interactions(num_users=1200, per_user=6).to_pylist()
        for row in rows:
            row["ts"] = np.datetime64(int(row["ts"]), "s").astype("datetime64[us]").item()
        client.ingest("ratings", rows)
    catalog = Catalog(settings.catalog_url)
    scheduler = Scheduler(catalog, settings)
    scheduler.apply_queues({"queues": [
        {"name": "lender", "team": "team-a", "cohort": "lab", "nominal": {"cpu": 2, "memory_gb": 8}},
        {"name": "borrower", "team": "team-b", "cohort": "lab", "nominal": {"cpu": 2, "memory_gb": 8}},
    ]})
    scheduler.start()
    yield scheduler
    scheduler.close()
    for job in scheduler.list_jobs():
        if not job.finished:
            scheduler.cancel(job.id)
    catalog.close()


def test_a_preempted_training_job_checkpoints_and_resumes_from_its_checkpoint(lab: Scheduler) -> None:
    train = lab.submit({"kind": "train", "team": "team-b", "queue": "borrower", "priority": 0,
                        "resources": {"cpu": 3, "memory_gb": 4}, "env": {"OMP_NUM_THREADS": "1"},
                        "args": {"spec": TRAIN_SPEC}})
    running = wait_status(lab, train.id, "running", timeout=60)
    assert running.borrowed is True  # 3 CPUs in a queue whose nominal quota is 2
    first_checkpoint = wait_for(lambda: lab.get(train.id).checkpoint, 240, "the first training checkpoint")
    assert isinstance(first_checkpoint, str)

    claim = lab.submit({"team": "team-a", "queue": "lender", "priority": 10, "resources": {"cpu": 2},
                        "command": command("print('the lender runs')")})
    assert lab.wait(claim.id, timeout=240).status == "succeeded"

    done = lab.wait(train.id, timeout=300)
    assert done.status == "succeeded", done.error
    assert done.preempted_count == 1 and done.attempts == 2
    statuses = [e.to_status for e in done.events]
    assert statuses == ["queued", "admitted", "running", "running", "preempted", "queued", "admitted", "running",
                        "succeeded"]
    assert "queue 'lender' needs its nominal quota back" in done.events[3].reason
    assert "resumes from checkpoint" in done.events[5].reason

    assert done.result is not None
    first_run = Path(first_checkpoint).parents[1].name
    assert done.result["resumed_from"] == first_run
    assert done.result["run_status"] == "finished"
    assert Path(done.checkpoint or "").parents[1].name == done.result["run_id"] != first_run
    log = "".join(lab.logs(train.id))
    assert "Stopped by the scheduler after checkpoint" in log
    assert f"resuming run {first_run} from its latest checkpoint" in log
    ledger = lab.usage(team="team-b", group_by=["job"]).rows
    assert ledger[0].attempts == 2 and ledger[0].cpu_hours > 0
