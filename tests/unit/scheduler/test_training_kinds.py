"""Train and tune jobs at submission and launch, on a SQLite catalog without running anything: what a tune job
reserves for itself and passes to its trials, how trial arguments are checked, and what a data-parallel training
job (one process that starts its own N workers) reserves on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import InvalidSpec
from recplane.scheduler import Scheduler
from recplane.scheduler.admission import Resources
from recplane.scheduler.backends.ray import _reservation
from recplane.scheduler.kinds.tune import COORDINATOR_RESOURCES

TRAIN = {"dataset": "ratings", "train": {"model": "mf", "epochs": 2, "params": {"dim": 8}}}
SEARCH = {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Scheduler]:
    settings = Settings(home=tmp_path / "home", scheduler_capacity_cpu=16, scheduler_capacity_memory_gb=64)
    settings.home.mkdir(parents=True)
    catalog = Catalog(settings.catalog_url)
    service = Scheduler(catalog, settings)
    yield service
    service.close()
    catalog.close()


def tune_job(**args: Any) -> dict[str, Any]:
    return {"kind": "tune", "args": {"spec": {**TRAIN, "search": SEARCH}, "trials": 4, **args}}


def test_a_tune_job_reserves_a_sliver_for_itself_and_gives_its_resources_to_each_trial(scheduler: Scheduler) -> None:
    job = scheduler.submit({**tune_job(parallel=2, study="mf-lr"), "resources": {"cpu": 2, "memory_gb": 3}})
    assert job.resources == COORDINATOR_RESOURCES and job.workers == 1
    assert COORDINATOR_RESOURCES.cpu < 1  # a coordinator must never hold the CPU its own trials wait for
    assert job.args["trial_resources"] == {"cpu": 2.0, "memory_gb": 3.0, "gpu": 0.0}
    assert (job.name, job.args["study"], job.args["parallel"], job.args["trials"]) == ("mf-lr", "mf-lr", 2, 4)
    default = scheduler.submit(tune_job())
    assert default.args["study"] == "tune-mf-ratings" and default.name == "tune-mf-ratings"
    assert (default.args["parallel"], default.args["seed"], default.args["warmup_epochs"]) == (1, 0, 2)
    assert default.args["trial_resources"] == {"cpu": 1.0, "memory_gb": 1.0, "gpu": 0.0}


@pytest.mark.parametrize(("args", "message"), [
    ({"trials": 0}, r"args.trials` must be an integer >= 1; got 0"),
    ({"trials": None}, r"args.trials` must be an integer >= 1; got None"),
    ({"parallel": 0}, r"args.parallel` must be an integer >= 1"),
    ({"seed": -1}, r"args.seed` must be an integer >= 0"),
    ({"study": "../etc/passwd"}, r"names its trial jobs and runs"),
    ({"trial_resources": {"cpu": -1}}, r"trial_resources` is not a resource spec"),
    ({"budget": 3}, r"Unknown tune job args \['budget'\]"),
])
def test_tune_jobs_with_bad_arguments_are_refused_at_submission(
    scheduler: Scheduler, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidSpec, match=message):
        scheduler.submit(tune_job(**args))


def test_a_tune_job_needs_a_search_space_and_one_coordinator(scheduler: Scheduler) -> None:
    with pytest.raises(InvalidSpec, match="needs a `search` space"):
        scheduler.submit({"kind": "tune", "args": {"spec": TRAIN, "trials": 2}})
    with pytest.raises(InvalidSpec, match="runs one coordinator"):
        scheduler.submit({**tune_job(), "workers": 2})


def test_a_trial_train_job_must_say_which_study_and_trial_it_is(scheduler: Scheduler) -> None:
    trial = {"study": "s", "number": 0, "journal": "/tmp/s.journal", "tune_job": "abc", "warmup_epochs": 2}
    job = scheduler.submit({"kind": "train", "args": {"spec": TRAIN, "trial": trial}})
    assert job.args["trial"] == trial
    with pytest.raises(InvalidSpec, match="must be a mapping of"):
        scheduler.submit({"kind": "train", "args": {"spec": TRAIN, "trial": {"study": "s"}}})
    with pytest.raises(InvalidSpec, match=r"\['number'\] of the wrong type"):
        scheduler.submit({"kind": "train", "args": {"spec": TRAIN, "trial": {**trial, "number": "0"}}})


def test_a_data_parallel_training_job_reserves_all_its_workers_on_the_one_process(scheduler: Scheduler) -> None:
    job = scheduler.submit({"kind": "train", "resources": {"cpu": 2, "memory_gb": 4, "gpu": 1},
                            "args": {"spec": {**TRAIN, "workers": 3}}})
    assert job.workers == 3
    launch = scheduler.rounds._launch(scheduler.store.record(job.id), 1)
    assert launch.processes == 1  # the trainer starts its own 3 workers inside it
    assert launch.resources == Resources(6, 12, 3)
    assert launch.env["OMP_NUM_THREADS"] == "2"  # each worker's threads, not the gang's
    assert _reservation(launch.resources) == {"entrypoint_num_cpus": 6, "entrypoint_num_gpus": 3,
                                              "entrypoint_memory": 12 * 10**9}

    gang = scheduler.submit({"command": ["true"], "workers": 3, "resources": {"cpu": 2, "memory_gb": 4}})
    launch = scheduler.rounds._launch(scheduler.store.record(gang.id), 1)
    assert (launch.processes, launch.resources) == (3, Resources(2, 4, 0))  # each rank is its own process
