"""Batch inference: a deployment's top-k for every user of a dataset lands as one new version of another dataset,
equal to what online serving answers, through the SDK and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from tests.fixtures.bundles import interactions
from typer.testing import CliRunner

from recplane import Client
from recplane.cli import app
from recplane.config import Settings
from recplane.errors import InvalidInput
from recplane.serving.predict import predict
from recplane.serving.recommender import Recommender, RecommendRequest
from recplane.serving.spec import load_deployment

pytestmark = pytest.mark.integration

RATINGS = {
    "name": "ratings",
    "event_time": "ts",
    "columns": {"user_id": "int64", "item_id": "int64", "rating": "float32", "ts": "timestamp"},
}
USERS = {"name": "shop_users", "columns": {"user_id": "int64", "segment": "string"}}
DEPLOYMENT = {"name": "shop", "retrieval": {"name": "mf-shop"}, "k": 3}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with ratings, a users dataset (with a duplicate and an unknown user) and a registered MF."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("home")
    try:
        with Client(settings=Settings(home=folder, group_commit_max_wait_ms=2.0)) as client:
            client.create_dataset(RATINGS)
            client.replace_dataset("ratings", interactions())
            client.create_dataset(USERS)
            client.replace_dataset("shop_users", pa.table({"user_id": [4, 0, 4, 77, 12], "segment": list("abcde")}))
            spec = {"dataset": "ratings", "train": {"model": "mf", "epochs": 2, "params": {"dim": 8}, "patience": None}}
            run = client.train(spec).run
            client.register_model("mf-shop", run_id=run.id)
            client.set_model_alias("mf-shop", "production", 1)
        yield folder
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def client(home: Path) -> Iterator[Client]:
    with Client(settings=Settings(home=home, group_commit_max_wait_ms=2.0)) as client:
        yield client


def test_predict_writes_the_top_k_of_each_distinct_user_as_one_new_version(client: Client) -> None:
    result = client.predict(DEPLOYMENT, users="shop_users", out="shop_top3", chunk=2)
    assert (result.users, result.rows, result.fallback_users) == (4, 12, 1)
    assert result.model_versions == {"retrieval": "mf-shop:1"}
    assert result.users_dataset == "shop_users" and result.version == client.get_dataset("shop_top3").current_version
    rows = client.read("shop_top3").sort_by([("user_id", "ascending"), ("rank", "ascending")])
    assert rows.column("user_id").to_pylist() == [0] * 3 + [4] * 3 + [12] * 3 + [77] * 3
    assert rows.column("rank").to_pylist() == [1, 2, 3] * 4
    assert set(rows.column("retrieval_model").to_pylist()) == {"mf-shop:1"}
    assert rows.column("ranking_model").null_count == rows.num_rows
    unknown = rows.filter(pc.equal(rows.column("user_id"), 77))
    assert set(unknown.column("fallback").to_pylist()) == {"popularity: unknown user"}
    runtime = client._impl.runtime  # type: ignore[union-attr]  # the same in-process platform serves online
    online = Recommender.load(load_deployment(DEPLOYMENT), runtime).recommend_batch(
        [RecommendRequest(user, k=3) for user in [0, 4, 12, 77]]
    )
    assert rows.column("item_id").to_pylist() == [item.item_id for answer in online for item in answer.items]


def test_each_run_is_a_new_version_and_older_runs_stay_readable(client: Client) -> None:
    first = client.predict(DEPLOYMENT, users="shop_users", out="shop_runs", k=2)
    second = client.predict(DEPLOYMENT, users=pa.array([4, 12]), out="shop_runs", k=1)
    assert second.version == first.version + 1
    assert client.read("shop_runs").num_rows == 2
    assert client.read("shop_runs", version=first.version).num_rows == 8
    latest = client.history("shop_runs")[0]
    assert latest.version == second.version and latest.rows_added == 2 and latest.rows_removed == 8


def test_bad_inputs_are_refused_with_the_fix(client: Client, settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="has no column 'customer'"):
        client.predict(DEPLOYMENT, users="shop_users", users_column="customer", out="x")
    with pytest.raises(InvalidInput, match="k and chunk must be >= 1"):
        client.predict(DEPLOYMENT, users="shop_users", out="x", k=0)
    remote = Client(url="http://127.0.0.1:9", token="x", settings=settings)
    with pytest.raises(InvalidInput, match="cannot run batch inference yet"):
        remote.predict(DEPLOYMENT, users="shop_users", out="x")


def test_cli_predict_prints_a_summary_and_writes_the_dataset(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "shop.yaml"
    spec.write_text("name: shop\nretrieval: {name: mf-shop, alias: production}\nk: 2\n")
    args = ["--home", str(home), "predict", str(spec), "--users", "shop_users", "--out", "cli_top2", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Wrote 8 rows for 4 users to cli_top2@" in result.output and "fallback users: 1" in result.output
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0 and '"rows": 8' in as_json.output


def test_predict_streams_chunks_into_one_version_holding_one_chunk_at_a_time(client: Client) -> None:
    """30k users in chunks of 500: the Arrow memory in use stays near one chunk's answers (the old all-in-memory
    commit grew by every chunk), readers see the previous version until the single commit at the end."""
    runtime = client._impl.runtime  # type: ignore[union-attr]
    spec = load_deployment({**DEPLOYMENT, "k": 10})
    first = predict(runtime, spec, users=pa.array([4, 12]), out="shop_stream")
    users = pa.array(range(1_000_000, 1_030_000))  # unknown users: popularity answers, cheap to compute
    baseline = pa.total_allocated_bytes()
    held: list[int] = []
    visible: list[int] = []

    def progress(done: int, total: int) -> None:
        held.append(pa.total_allocated_bytes() - baseline)
        if len(held) % 20 == 1:
            visible.append(client.get_dataset("shop_stream").current_version)

    result = predict(runtime, spec, users=users, out="shop_stream", chunk=500, progress=progress)

    assert (result.rows, result.fallback_users, len(held)) == (300_000, 30_000, 60)
    assert result.version == first.version + 1 and set(visible) == {first.version}
    written = client.read("shop_stream")
    assert written.num_rows == 300_000 and client.history("shop_stream")[0].rows_added == 300_000
    chunk_bytes = written.nbytes / 60
    assert max(held) < 6 * chunk_bytes < written.nbytes / 8, (max(held), chunk_bytes, written.nbytes)


def test_a_run_that_fails_midway_writes_no_version(client: Client) -> None:
    runtime = client._impl.runtime  # type: ignore[union-attr]
    spec = load_deployment(DEPLOYMENT)
    first = predict(runtime, spec, users=pa.array([4, 12]), out="shop_failed")
    model = Recommender.load(spec, runtime)

    def close_after_two_chunks(done: int, total: int) -> None:
        if done == 2:
            model.close()  # the next chunk's recommend_table raises

    with pytest.raises(InvalidInput, match="is closed"):
        predict(runtime, spec, users="shop_users", out="shop_failed", chunk=1, recommender=model,
                progress=close_after_two_chunks)  # fmt: skip
    assert client.get_dataset("shop_failed").current_version == first.version
    assert client.read("shop_failed").num_rows == first.rows
