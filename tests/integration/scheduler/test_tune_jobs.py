"""Tune jobs through a real scheduler loop on the local backend: the tune job coordinates the study and every
trial is its own ``train`` job process, sharing the study through its Optuna journal (pruning included); the
result names the best run, every trial is in the usage ledger, and cancelling the tune job cancels its trials."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from tests.fixtures.runs import tiny_interactions
from tests.fixtures.scheduler.waiting import wait_for, wait_status
from typer.testing import CliRunner

from recplane import Client
from recplane.catalog import Catalog
from recplane.cli import app
from recplane.config import Settings
from recplane.scheduler import Job, Scheduler
from recplane.scheduler.kinds.tune import COORDINATOR_RESOURCES, journal_path

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

RATINGS = {"name": "ratings", "event_time": "ts",
           "columns": {"user_id": "int64", "item_id": "int64", "ts": "timestamp"}}
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def spec(epochs: int = 2, **search: Any) -> dict[str, Any]:
    return {
        "dataset": "ratings",
        "export": False,
        "train": {"model": "mf", "epochs": epochs, "batch_size": 32, "lr": 0.05, "params": {"dim": 8},
                  "patience": None, "seed": 3},
        "search": search or {"lr": {"type": "float", "low": 0.005, "high": 0.1, "log": True}},
    }


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Scheduler, Client]]:
    """A ratings dataset, a 4-CPU scheduler loop and a client on the same home."""
    settings = Settings(home=tmp_path / "home", scheduler_capacity_cpu=4, scheduler_capacity_memory_gb=16,
                        scheduler_grace_seconds=10, scheduler_interval_seconds=0.1)
    client = Client(settings=settings)
    client.create_dataset(RATINGS)
    rows = tiny_interactions(num_users=60).to_pylist()
    for row in rows:
        row["ts"] = np.datetime64(int(row["ts"]), "s").astype("datetime64[us]").item()
    client.ingest("ratings", rows)
    catalog = Catalog(settings.catalog_url)
    scheduler = Scheduler(catalog, settings)
    scheduler.start()
    yield scheduler, client
    scheduler.close()
    for job in scheduler.list_jobs(limit=1000):
        if not job.finished:
            scheduler.cancel(job.id)
    catalog.close()
    client.close()


def trial_jobs(scheduler: Scheduler, tune: Job) -> list[Job]:
    jobs = [job for job in scheduler.list_jobs(kind="train", limit=1000)
            if (job.args.get("trial") or {}).get("tune_job") == tune.id]
    return sorted(jobs, key=lambda job: job.args["trial"]["number"])


def test_every_trial_is_a_train_job_and_the_result_names_the_best_run(lab: tuple[Scheduler, Client]) -> None:
    scheduler, client = lab
    tune = scheduler.submit({"kind": "tune", "team": "recsys", "priority": 5, "resources": {"cpu": 1},
                             "env": ENV, "args": {"spec": spec(), "trials": 3, "parallel": 3, "study": "mf-lr"}})
    assert tune.resources == COORDINATOR_RESOURCES and tune.name == "mf-lr"
    assert tune.args["trial_resources"]["cpu"] == 1

    done = scheduler.wait(tune.id, timeout=150)
    assert done.status == "succeeded", done.error

    trials = trial_jobs(scheduler, tune)
    assert [job.name for job in trials] == ["mf-lr-trial-0", "mf-lr-trial-1", "mf-lr-trial-2"]
    assert all(job.status == "succeeded" and job.kind == "train" for job in trials)
    assert {(job.team, job.queue, job.priority, job.resources.cpu) for job in trials} == {("recsys", "default", 5,
                                                                                           1.0)}
    assert all("search" not in job.args["spec"] for job in trials)

    result = done.result
    assert result is not None
    assert (result["study"], result["metric"], result["direction"], result["trials"]) == (
        "mf-lr", "mrr@10", "maximize", 3)
    summaries = result["trial_results"]
    assert [s["job_id"] for s in summaries] == [job.id for job in trials]
    assert [s["run_id"] for s in summaries] == [job.result["run_id"] for job in trials if job.result]
    for summary, job in zip(summaries, trials, strict=True):
        assert summary["state"] == "complete" and job.args["spec"]["train"]["lr"] == summary["params"]["lr"]
    best = max(summaries, key=lambda s: s["value"])
    assert (result["best_run"], result["best_value"], result["best_params"]) == (
        best["run_id"], best["value"], best["params"])

    runs = client.list_runs(group="mf-lr")
    assert {run.id for run in runs} == {s["run_id"] for s in summaries}
    assert {run.tags["tune_job"] for run in runs} == {tune.id}
    best_run = client.get_run(result["best_run"])
    assert best_run.metrics.best_valid == pytest.approx(result["best_value"])

    ledger = {row.group["job"]: row for row in scheduler.usage(group_by=["job"]).rows}
    for job in [*trials, done]:
        assert ledger[job.id].attempts == 1 and ledger[job.id].cpu_hours > 0

    shown = CliRunner().invoke(app, ["--home", str(scheduler.settings.home), "jobs", "show", tune.id])
    assert shown.exit_code == 0, shown.output
    assert result["best_run"] in shown.stdout and "Trials" in shown.stdout
    assert shown.stdout.count("complete") == 3


def test_a_trial_worse_than_the_median_is_pruned_in_its_own_job(lab: tuple[Scheduler, Client]) -> None:
    scheduler, _ = lab
    # lr 1e-6 learns nothing: once two trials have finished, such a trial falls below their median at epoch 1.
    search = {"lr": {"type": "categorical", "choices": [0.05, 0.000001]}}
    seed = _seed_sampling_good_good_bad(search)
    tune = scheduler.submit({"kind": "tune", "env": ENV, "args": {
        "spec": spec(epochs=3, **search), "trials": 3, "study": "pruning", "seed": seed, "warmup_epochs": 1}})
    done = scheduler.wait(tune.id, timeout=150)
    assert done.status == "succeeded", done.error
    assert done.result is not None
    states = [(s["params"]["lr"], s["state"]) for s in done.result["trial_results"]]
    assert states == [(0.05, "complete"), (0.05, "complete"), (0.000001, "pruned")]
    pruned_job = trial_jobs(scheduler, tune)[2]
    assert pruned_job.status == "succeeded" and pruned_job.result is not None
    assert pruned_job.result["run_status"] == "pruned" and "pruned after epoch 1" in pruned_job.result["pruned"]
    assert done.result["trial_results"][2]["run_id"] == pruned_job.result["run_id"]
    assert done.result["best_params"] == {"lr": 0.05}

    journal = journal_path(scheduler.settings.home, tune.id)
    study = optuna.load_study(study_name="pruning", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert sorted(study.trials[2].intermediate_values) == [0, 1]  # reported by the trial's own process


def _seed_sampling_good_good_bad(search: dict[str, Any]) -> int:
    """A sampler seed whose first three trials draw 0.05, 0.05, then 1e-6 (TPE samples at random at first)."""
    for seed in range(100):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), direction="maximize")
        choices = search["lr"]["choices"]
        drawn = []
        for _ in range(3):
            trial = study.ask()
            drawn.append(trial.suggest_categorical("lr", choices))
            study.tell(trial, 1.0)
        if drawn == [0.05, 0.05, 0.000001]:
            return seed
    raise AssertionError("no seed in 0..99 samples good, good, bad")


def test_cancelling_a_tune_job_cancels_its_trial_jobs(lab: tuple[Scheduler, Client]) -> None:
    scheduler, _ = lab
    tune = scheduler.submit({"kind": "tune", "env": ENV, "args": {
        "spec": spec(epochs=200), "trials": 4, "parallel": 2, "study": "long"}})
    wait_for(lambda: len(trial_jobs(scheduler, tune)) == 2 and all(
        job.status == "running" for job in trial_jobs(scheduler, tune)), 90, "two running trial jobs")
    scheduler.cancel(tune.id)
    assert wait_status(scheduler, tune.id, "cancelled", timeout=60).status == "cancelled"
    trials = trial_jobs(scheduler, tune)
    assert len(trials) == 2  # no trial submitted after the cancel
    for job in trials:
        assert wait_status(scheduler, job.id, "cancelled", timeout=60).status == "cancelled"


def test_a_restarted_coordinator_waits_for_its_trial_in_flight_instead_of_redoing_trials(
    lab: tuple[Scheduler, Client],
) -> None:
    scheduler, _ = lab
    tune = scheduler.submit({"kind": "tune", "env": ENV, "max_retries": 1, "backoff_seconds": 0.2, "args": {
        "spec": spec(epochs=12), "trials": 2, "study": "restart"}})
    wait_for(lambda: [job.status for job in trial_jobs(scheduler, tune)] == ["succeeded", "running"], 90,
             "trial 0 done and trial 1 running")
    pid = scheduler.get(tune.id).pid
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)  # the coordinator dies mid-study; its retry takes over

    done = scheduler.wait(tune.id, timeout=120)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and "attempt 1 killed by SIGKILL" in [e.reason for e in done.events]
    trials = trial_jobs(scheduler, tune)
    assert [job.name for job in trials] == ["restart-trial-0", "restart-trial-1"]  # none submitted twice
    assert all(job.status == "succeeded" and job.attempts == 1 for job in trials)
    assert done.result is not None and [s["state"] for s in done.result["trial_results"]] == ["complete"] * 2
    assert "waiting again for trials [1]" in "".join(scheduler.logs(tune.id))
