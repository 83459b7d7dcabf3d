"""The standard recsys pipeline end to end on small synthetic data: quality → ... → register → canary promotion,
then a rerun that reuses the trained run from cache and is stopped by the model gate."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.pipelines.conftest import fast_settings

from recplane import Client
from recplane.samples.loading import load_movielens_into, synthetic_movielens

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    with Client(settings=fast_settings(tmp_path / "home")) as embedded:
        tables = synthetic_movielens()
        load_movielens_into(embedded, dataclasses.replace(tables, ratings=tables.ratings.slice(0, 20_000)), "ml")
        yield embedded


def test_the_standard_pipeline_trains_gates_registers_and_promotes(client: Client) -> None:
    params = {"dataset": "ml_ratings", "model": "ml-mf", "train": {"model": "mf", "epochs": 1, "batch_size": 4096}}
    run = client.run_pipeline("recsys-standard", params=params, wait=True, timeout=500)
    assert run.status == "succeeded", run.error
    assert [s.step for s in run.steps] == ["quality_check", "features", "training_set", "train", "evaluate", "gate",
                                          "register", "promote"]
    checked = run.step("quality_check").outputs
    assert checked["name"] == "ml_ratings" and isinstance(checked["version"], int)
    assert run.step("train").inputs["data"] == checked  # the version the check passed is the one trained on
    assert run.step("gate").outputs["passed"] and run.step("gate").outputs["production"] is None
    assert run.step("register").outputs == {"$ref": "model_version", "name": "ml-mf", "version": 1, "alias": None}
    history = client.model_alias_history("ml-mf")
    assert [(e.alias, e.to_version) for e in reversed(history)] == [("candidate", 1), ("production", 1)]
    assert all(run.id in e.reason for e in history) and "canary" in history[-1].reason
    trained_run = run.step("train").outputs["id"]

    # Production now looks better than anything this data can give: the rerun reuses the trained run (cache) and
    # the gate refuses it, so nothing new is registered.
    client.register_model("ml-mf", run_id=trained_run, metrics={f"test.{run.step('evaluate').outputs['metric']}": 1.0})
    client.set_model_alias("ml-mf", "production", 2, reason="a strong model arrived")
    again = client.run_pipeline("recsys-standard", params=params, wait=True, timeout=300)
    assert again.status == "failed" and "Model gate refused" in (again.error or "")
    assert again.step("train").status == "cached" and again.step("train").outputs["id"] == trained_run
    assert again.step("register").status == "skipped" and again.step("promote").status == "skipped"
    assert [v.version for v in client.list_model_versions("ml-mf")] == [2, 1]
