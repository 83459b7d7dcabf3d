"""A ranker trained with row features is served with the deployment's feature service: online values from the
materialized store, the request context over them, the same encoding as in training."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from tests.fixtures.bundles import interactions

from recplane import Client
from recplane.config import Settings
from recplane.runtime import Runtime
from recplane.serving.recommender import Recommender, RecommendRequest
from recplane.serving.spec import load_deployment
from recplane.training import TrainConfig, train
from recplane.training.bundle import ModelBundle, load_bundle, write_bundle

pytestmark = pytest.mark.integration

FEATURES = """
entities: [{name: user, join_keys: [user_id]}, {name: item, join_keys: [item_id]}]
feature_views:
  - {name: user_spend, entities: [user], source: spend, ttl: 3650d, features: [amount]}
  - {name: item_stock, entities: [item], source: stock, ttl: 3650d, features: [units]}
feature_services: [{name: ranker_features, features: ["user_spend:amount", "item_stock:units"]}]
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, ModelBundle, ModelBundle, Any]]:
    """Users spend ``10 * (user % 3)`` and items have ``item % 5`` units (both materialized online); an MF and
    a DeepFM reading both as row features."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, group_commit_max_wait_ms=2.0)
    now = datetime.now(UTC)
    with Client(settings=settings) as client:
        columns = {"user_id": "int64", "amount": "float64", "ts": "timestamp"}
        client.create_dataset({"name": "spend", "event_time": "ts", "columns": columns})
        rows = [{"user_id": u, "amount": 10.0 * (u % 3), "ts": now - timedelta(hours=1)} for u in range(30) if u != 4]
        client.ingest("spend", rows)
        columns = {"item_id": "int64", "units": "float64", "ts": "timestamp"}
        client.create_dataset({"name": "stock", "event_time": "ts", "columns": columns})
        hour_ago = now - timedelta(hours=1)
        client.ingest("stock", [{"item_id": i, "units": float(i % 5), "ts": hour_ago} for i in range(40)])
        client.apply_features(FEATURES)
        client.materialize(end=now)
    table = interactions()
    amounts = pa.array([10.0 * (u % 3) for u in table.column("user_id").to_pylist()], pa.float64())
    table = table.append_column("amount", amounts)
    table = table.append_column("units", pa.array([float(i % 5) for i in table.column("item_id").to_pylist()]))
    folder = tmp_path_factory.mktemp("bundles")
    mf = train(table, TrainConfig(model="mf", epochs=1, params={"dim": 8}, patience=None))
    retrieval = load_bundle(write_bundle(mf, folder / "mf", interactions=table, forms=("torchscript",)))
    params = {"embedding_size": 4, "mlp_hidden_size": [8]}
    config = TrainConfig(model="deepfm", epochs=2, params=params, row_feature_columns=["amount", "units"])
    deepfm = train(table, config)
    ranker = load_bundle(write_bundle(deepfm, folder / "deepfm", interactions=table, forms=("torchscript",)))
    runtime = Runtime(settings)
    try:
        yield runtime, retrieval, ranker, deepfm.model
    finally:
        runtime.close()
        torch.set_num_threads(previous)


def expected_scores(ranker: ModelBundle, model: Any, user: int, items: list[int], amount: float | None) -> np.ndarray:
    """The trained model's own probabilities for the pairs, with ``amount`` encoded by the bundle's encoder."""
    assert ranker.row_features is not None
    encoded = ranker.row_features.encode({"amount": [amount] * len(items), "units": [float(i % 5) for i in items]})
    batch = ranker.ranking_inputs(ranker.users.encode([user] * len(items)), ranker.items.encode(items), encoded)
    return model.predict({k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()})["label"].numpy()


def test_online_values_feed_the_ranker_and_are_logged_with_the_answer(setup: tuple[Any, ...]) -> None:
    runtime, retrieval, ranker, model = setup
    spec = load_deployment(
        {
            "name": "shop",
            "retrieval": {"name": "mf", "path": str(Path(retrieval.path))},
            "ranking": {"name": "deepfm", "path": str(Path(ranker.path))},
            "features": "ranker_features",
            "logging": {"log_features": True},
        }
    )
    recommender = Recommender.from_bundles(spec, retrieval, ranker, runtime=runtime)
    rich, missing, overridden = recommender.recommend_batch(
        [RecommendRequest(5, k=4), RecommendRequest(4, k=4), RecommendRequest(5, k=4, context={"amount": 0.0})]
    )
    # A view keyed by item: values are looked up per (user, item) pair, and logged aligned with the items.
    for answer in (rich, missing, overridden):
        assert answer.features is not None
        assert answer.features["units"] == [float(item.item_id % 5) for item in answer.items]
    assert rich.features["amount"] == [20.0] * 4  # user 5 spends 10 * (5 % 3) online
    assert missing.features["amount"] == [None] * 4  # user 4 has no online row: encoded as missing
    assert overridden.features["amount"] == [0.0] * 4  # the request context wins over the store
    for answer, amount in [(rich, 20.0), (missing, None), (overridden, 0.0)]:
        items = [item.item_id for item in answer.items]
        user = 5 if answer is not missing else 4
        np.testing.assert_allclose(
            [item.score for item in answer.items], expected_scores(ranker, model, user, items, amount), rtol=1e-4
        )
    assert rich.stage_ms["features"] > 0
