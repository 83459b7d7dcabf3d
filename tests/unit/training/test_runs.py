"""Training runs in the catalog: the store's round trip, the recorder on real runs, failures, comparisons."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tests.fixtures.runs import record_tiny_run, tiny_config, tiny_interactions

from recplane.auth import Principal
from recplane.catalog import Catalog
from recplane.errors import Forbidden, InvalidInput, NotFound
from recplane.training import train
from recplane.training.callbacks import RunPruned, TrainCallback
from recplane.training.runs import (
    NewRun,
    RunEpoch,
    RunMetrics,
    RunRecord,
    RunRecorder,
    RunStore,
    compare_runs,
    source_version,
)
from recplane.training.trainer import EpochRecord


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield RunStore(catalog, tmp_path / "artifacts")
    catalog.close()


def _new(model: str = "mf", **fields: object) -> NewRun:
    return NewRun(model=model, config={"model": model, "params": {"dim": 8}, "lr": 0.01}, **fields)  # type: ignore[arg-type]


def test_a_run_round_trips_through_the_store(store: RunStore) -> None:
    created = store.create(_new(dataset="ratings", dataset_version=4, tags={"owner": "ana"}, group="study-1"))
    assert created.status == "running" and created.params == {"dim": 8}
    assert Path(created.artifacts_uri) == store.directory(created.id) and store.directory(created.id).is_dir()
    store.start(created.id, config={"model": "mf", "params": {"dim": 16}, "lr": 0.02}, metrics=RunMetrics(num_users=5))
    store.log_epoch(created.id, RunEpoch(epoch=1, loss=0.5, valid={"mrr@10": 0.2}, seconds=1.5))
    store.log_epoch(created.id, RunEpoch(epoch=0, loss=0.7, valid={"mrr@10": 0.1}, seconds=1.0))
    store.log_epoch(created.id, RunEpoch(epoch=1, loss=0.4, valid={"mrr@10": 0.25}, seconds=1.5))
    store.finish(created.id, RunMetrics(test={"recall@10": 0.3}, best_valid=0.25, best_epoch=1))

    run = store.get(created.id)
    assert run.status == "finished" and run.error is None
    assert run.config["lr"] == 0.02 and run.params == {"dim": 16}
    assert [(e.epoch, e.loss, e.valid) for e in run.epochs] == [(0, 0.7, {"mrr@10": 0.1}), (1, 0.4, {"mrr@10": 0.25})]
    assert run.metrics.test == {"recall@10": 0.3} and run.metrics.num_users == 5 and run.metrics.best_epoch == 1
    assert (run.dataset, run.dataset_version, run.group, run.tags) == ("ratings", 4, "study-1", {"owner": "ana"})
    assert run.started_at is not None and run.finished_at is not None
    assert run.created_at <= run.started_at <= run.finished_at <= datetime.now(UTC)


def test_an_ended_run_refuses_further_updates(store: RunStore) -> None:
    run = store.create(_new())
    store.fail(run.id, "RuntimeError: out of memory")
    assert store.get(run.id).error == "RuntimeError: out of memory"
    with pytest.raises(InvalidInput, match="already ended \\(failed\\)"):
        store.finish(run.id, RunMetrics())
    with pytest.raises(InvalidInput):
        store.log_epoch(run.id, RunEpoch(epoch=0, loss=1.0, seconds=0.1))


def test_listing_filters_and_stays_inside_the_callers_team(store: RunStore) -> None:
    ads = Principal(team="ads")
    first = store.create(_new(team="ads", dataset="clicks"), principal=ads)
    second = store.create(_new("lightgcn", team="ads", dataset="clicks", group="g"), principal=ads)
    other = store.create(_new(team="search"))
    store.finish(first.id, RunMetrics())

    assert [r.id for r in store.list(principal=ads)] == [second.id, first.id]
    assert {r.id for r in store.list()} == {first.id, second.id, other.id}
    assert [r.id for r in store.list(principal=ads, model="lightgcn")] == [second.id]
    assert [r.id for r in store.list(principal=ads, status="finished")] == [first.id]
    assert [r.id for r in store.list(group="g")] == [second.id]
    assert [r.id for r in store.list(dataset="clicks", limit=1)] == [second.id]
    with pytest.raises(Forbidden, match="belongs to team 'search'"):
        store.get(other.id, principal=ads)
    with pytest.raises(Forbidden):
        store.compare([first.id, other.id], principal=ads)
    with pytest.raises(Forbidden):
        store.create(_new(team="search"), principal=ads)
    with pytest.raises(NotFound, match="recplane runs list"):
        store.get("nope")
    with pytest.raises(InvalidInput, match="Unknown run status 'done'"):
        store.list(status="done")
    with pytest.raises(InvalidInput, match="at least two"):
        store.compare([first.id, first.id])


def test_a_trial_points_at_its_study_run(store: RunStore) -> None:
    study = store.create(_new(group="study"))
    trial = store.create(_new(group="study", parent_id=study.id))
    assert store.get(trial.id).parent_id == study.id
    with pytest.raises(NotFound, match="Parent run 'missing'"):
        store.create(_new(parent_id="missing"))


def test_the_recorder_stores_a_real_training_run_and_its_files(store: RunStore) -> None:
    run = record_tiny_run(store, group="g1")
    assert run.status == "finished" and run.model == "mf"
    assert len(run.epochs) == 2 and run.epochs[0].epoch < run.epochs[1].epoch
    assert all(e.loss is not None and e.seconds > 0 and "mrr@10" in e.valid for e in run.epochs)
    assert run.config["epochs"] == 2 and run.params["dim"] == 8
    metrics = run.metrics
    assert metrics.epochs_run == 2 and metrics.valid_metric == "mrr@10" and metrics.best_valid is not None
    assert metrics.test["recall@10"] is not None and 0.0 <= metrics.test["recall@10"] <= 1.0
    assert metrics.final_loss == run.epochs[-1].loss
    assert metrics.num_users == 40 and metrics.num_parameters and metrics.train_seconds
    assert (run.dataset, run.dataset_version) == ("ratings", 3)

    folder = Path(run.artifacts_uri)
    state = torch.load(folder / "model.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(t, torch.Tensor) for t in state.values())
    curve = pq.read_table(folder / "curve.parquet")
    assert curve.column_names == ["step", "loss"] and curve["step"].to_pylist() == list(range(1, curve.num_rows + 1))
    assert metrics.train_rows and curve.num_rows == 2 * -(-metrics.train_rows // 32), "one loss per batch, 2 epochs"
    epochs = pq.read_table(folder / "epochs.parquet")
    assert {"epoch", "loss", "seconds", "mrr@10"} <= set(epochs.column_names) and epochs.num_rows == 2
    assert json.loads((folder / "metrics.json").read_text())["test"] == metrics.test
    assert json.loads((folder / "config.json").read_text())["lr"] == 0.05


def test_a_run_that_raises_ends_failed_with_its_error_and_partial_files(store: RunStore) -> None:
    class Explode(TrainCallback):
        def on_epoch_end(self, record: EpochRecord) -> None:
            raise RuntimeError("disk full")

    config = tiny_config(epochs=3)
    recorder = RunRecorder.start(store, NewRun(model="mf", config=asdict(config)))
    with pytest.raises(RuntimeError, match="disk full"), recorder:
        train(tiny_interactions(), config, callbacks=[recorder, Explode()])
    run = store.get(recorder.run_id)
    assert run.status == "failed" and run.error == "RuntimeError: disk full"
    assert len(run.epochs) == 1, "the epoch before the failure is kept"
    assert pq.read_table(Path(run.artifacts_uri) / "epochs.parquet").num_rows == 1
    assert pq.read_table(Path(run.artifacts_uri) / "curve.parquet").num_rows > 0
    assert not (Path(run.artifacts_uri) / "model.pt").exists()


def test_bad_input_before_training_starts_is_a_failed_run(store: RunStore) -> None:
    config = tiny_config()
    recorder = RunRecorder.start(store, NewRun(model="mf", config=asdict(config)))
    with pytest.raises(InvalidInput), recorder:
        train(pa.table({"user_id": [1, 2]}), config, callbacks=[recorder])
    run = store.get(recorder.run_id)
    assert run.status == "failed" and "item_id" in (run.error or "") and run.started_at is None


def test_a_pruned_trial_is_recorded_as_pruned_and_names_its_run(store: RunStore) -> None:
    class PruneAfterFirstEpoch(TrainCallback):
        def on_epoch_end(self, record: EpochRecord) -> None:
            raise RunPruned("below the median at epoch 1")

    config = tiny_config(epochs=3)
    recorder = RunRecorder.start(store, NewRun(model="mf", config=asdict(config), group="study"))
    with pytest.raises(RunPruned) as caught, recorder:
        train(tiny_interactions(), config, callbacks=[recorder, PruneAfterFirstEpoch()])
    assert caught.value.run_id == recorder.run_id
    run = store.get(recorder.run_id)
    assert run.status == "pruned" and run.error == "below the median at epoch 1"


def test_compare_shows_differing_settings_and_marks_the_best_run_per_metric(store: RunStore) -> None:
    slow = record_tiny_run(store, lr=0.001)
    fast = record_tiny_run(store, lr=0.05)
    comparison = store.compare([slow.id, fast.id])
    rows = {row.name: row for row in comparison.rows}
    assert comparison.run_ids == [slow.id, fast.id]
    assert rows["lr"].kind == "param" and rows["lr"].values == [0.001, 0.05]
    assert "epochs" not in rows and "model" not in rows, "equal settings are left out"
    loss = rows["final_loss"]
    assert loss.higher_is_better is False and loss.best == loss.values.index(min(loss.values))  # type: ignore[type-var]
    recall = rows["test.recall@10"]
    assert recall.higher_is_better is True and recall.values[recall.best or 0] == max(recall.values)  # type: ignore[type-var]
    assert rows["epochs_run"].best is None


def _record(run_id: str, **metrics: object) -> RunRecord:
    return RunRecord(
        id=run_id,
        name=run_id,
        team="t",
        model="mf",
        status="finished",
        config={"params": {"dim": 8}},
        params={},
        recplane_version="0",
        metrics=RunMetrics.model_validate(metrics),
        artifacts_uri="/x",
        created_at=datetime.now(UTC),
    )


def test_compare_by_hand_picks_ties_first_skips_missing_values_and_flattens_params() -> None:
    a = _record("a", test={"ndcg@10": 0.4, "log_loss": 0.3}, train_seconds=5.0)
    b = _record("b", test={"ndcg@10": 0.4, "log_loss": 0.2})
    c = _record("c", test={"ndcg@10": None, "log_loss": 0.5}, train_seconds=3.0)
    c = c.model_copy(update={"config": {"params": {"dim": 16}}})
    rows = {row.name: row for row in compare_runs([a, b, c]).rows}
    assert rows["test.ndcg@10"].best == 0
    assert rows["test.log_loss"].best == 1 and rows["test.log_loss"].higher_is_better is False
    assert rows["train_seconds"].values == [5.0, None, 3.0] and rows["train_seconds"].best == 2
    assert rows["params.dim"].values == [8, 8, 16]


def test_source_version_names_this_checkouts_commit() -> None:
    source = source_version()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    assert source.git_sha == head and source.git_dirty in (True, False)
    assert source.version
