"""Training specs run as recorded runs against real datasets: pinned versions, exported model, exact resume,
tuning trials as runs, and the CLI over all of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from tests.fixtures.runs import tiny_interactions
from typer.testing import CliRunner

from recplane import Client
from recplane.cli import app
from recplane.config import Settings
from recplane.errors import InvalidInput, InvalidSpec, NotFound
from recplane.training.export import load_exported

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

RATINGS = {
    "name": "ratings",
    "event_time": "ts",
    "columns": {"user_id": "int64", "item_id": "int64", "ts": "timestamp"},
}




@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as client:
        client.create_dataset(RATINGS)
        client.ingest("ratings", _rows())
        yield client


def _rows() -> list[dict[str, object]]:
    table = tiny_interactions(num_users=40)
    rows = table.to_pylist()
    for row in rows:
        row["ts"] = np.datetime64(int(row["ts"]), "s").astype("datetime64[us]").item()
    return rows


def spec(**train: object) -> dict[str, object]:
    settings = {"model": "mf", "epochs": 2, "batch_size": 32, "lr": 0.05, "params": {"dim": 8}, "patience": None}
    return {"dataset": "ratings", "train": {**settings, **train}}


def test_a_spec_trains_into_a_recorded_run_with_pinned_data_and_an_exported_model(client: Client) -> None:
    trained = client.train(spec())
    run = trained.run
    assert run.status == "finished" and run.dataset == "ratings"
    assert run.dataset_version == client.get_dataset("ratings").current_version
    assert [epoch.epoch for epoch in run.epochs] == [0, 1]
    assert run.metrics.test == pytest.approx(trained.result.test_metrics)
    folder = Path(run.artifacts_uri)
    assert (folder / "spec.yaml").is_file() and (folder / "checkpoints" / "latest.pt").is_file()
    exported = load_exported(folder / "model")
    users = torch.tensor([1, 2, 3])
    np.testing.assert_allclose(
        exported.query_vectors({"user_id": users}),
        trained.result.model.user_representation({"user_id": users}).detach().numpy(),
        rtol=1e-4,
        atol=1e-5,
    )
    raw_users = pq.read_table(folder / "model" / "user_ids.parquet").column("user_id")
    assert raw_users.to_pylist() == trained.result.user_map.values.to_pylist()


def test_resuming_a_run_continues_exactly_where_its_checkpoint_stopped(client: Client) -> None:
    straight = client.train(spec(epochs=3))
    first = client.train(spec(epochs=2))
    resumed = client.train({**spec(epochs=3), "version": first.run.dataset_version}, resume=first.run.id)
    assert resumed.run.parent_id == first.run.id and resumed.run.tags["resumed_from"] == first.run.id
    assert resumed.result.step_losses == pytest.approx(straight.result.step_losses)
    assert resumed.run.metrics.test == pytest.approx(straight.run.metrics.test)


def test_resume_without_a_spec_reuses_the_runs_own_spec(client: Client) -> None:
    first = client.train(spec(epochs=1))
    again = client.train(resume=first.run.id)
    assert again.run.config["epochs"] == 1 and again.run.dataset_version == first.run.dataset_version


def test_clear_errors_for_bad_specs_missing_data_and_remote_training(client: Client, settings: Settings) -> None:
    with pytest.raises(InvalidSpec, match="Unknown train setting"):
        client.train(spec(learning_rate=0.1))
    with pytest.raises(NotFound, match="No dataset named 'nope'"):
        client.train({**spec(), "dataset": "nope"})
    with pytest.raises(InvalidInput, match="Give a training spec"):
        client.train()
    remote = Client(url="http://127.0.0.1:9", token="x", settings=settings)
    with pytest.raises(InvalidInput, match="cannot start training yet"):
        remote.train(spec())


def test_tuning_records_every_trial_as_a_run_of_the_study(client: Client, tmp_path: Path) -> None:
    search = {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}
    result = client.tune({**spec(epochs=3), "search": search}, trials=4, study="lr-study")
    assert len(result.trials) == 4 and result.best is not None
    runs = client.list_runs(group="lr-study")
    assert {run.id for run in runs} == {trial.run_id for trial in result.trials}
    assert {run.status for run in runs} <= {"finished", "pruned"}
    completed = [t for t in result.trials if t.state == "complete"]
    assert result.best.value == max(t.value for t in completed if t.value is not None)
    best = result.write_best(tmp_path / "best.yaml")
    assert "search" not in best.read_text() and str(result.best.params["lr"])[:6] in best.read_text()


def test_cli_train_and_tune(settings: Settings, client: Client, tmp_path: Path) -> None:
    spec_file = tmp_path / "mf.yaml"
    spec_file.write_text(
        "dataset: ratings\nexport: false\ntrain: {model: mf, epochs: 1, batch_size: 32, params: {dim: 8}}\n"
        "search:\n  lr: {type: float, low: 0.001, high: 0.1, log: true}\n"
    )
    runner = CliRunner()
    home = ["--home", str(settings.home)]
    trained = runner.invoke(app, [*home, "train", str(spec_file), "--set", "params.dim=4", "--json"])
    assert trained.exit_code == 0, trained.output
    run = json.loads(trained.stdout)
    assert run["status"] == "finished" and run["params"] == {"dim": 4}
    tuned = runner.invoke(app, [*home, "tune", str(spec_file), "--trials", "2", "--out", str(tmp_path / "b.yaml")])
    assert tuned.exit_code == 0, tuned.output
    assert "Best" in tuned.stdout and (tmp_path / "b.yaml").is_file()
    bad = runner.invoke(app, [*home, "train", str(spec_file), "--set", "oops"])
    assert isinstance(bad.exception, InvalidInput) and "KEY=VALUE" in str(bad.exception)
