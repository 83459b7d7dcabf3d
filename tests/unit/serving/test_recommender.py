"""The pipeline on a hand-built MF whose scores are known: exclusions happen before the cut to ``candidates`` (so a
heavy user still gets k items), k may exceed ``candidates``, and every answer is accounted for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from tests.fixtures.bundles import interactions

from recplane.errors import InvalidInput
from recplane.models.mf import MF
from recplane.serving.recommender import Recommender, RecommendRequest
from recplane.serving.spec import load_deployment
from recplane.training import TrainConfig, train
from recplane.training.bundle import load_bundle, write_bundle, write_model_bundle
from recplane.training.data import IdMap

NUM_ITEMS = 12


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Users "u0".."u2"; item ``100 + i`` scores ``NUM_ITEMS - i`` for every user; u1 has seen the top 5 items."""
    model = MF(4, NUM_ITEMS + 1, dim=2)
    with torch.no_grad():
        model.user_table.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
        scores = torch.tensor([0.0, *[float(NUM_ITEMS - i) for i in range(NUM_ITEMS)]])
        model.item_table.weight.copy_(torch.stack([scores, torch.zeros(NUM_ITEMS + 1)], dim=1))
    seen = pa.table({"user_id": ["u1"] * 5 + ["u2"], "item_id": [100, 101, 102, 103, 104, 111]})
    return write_model_bundle(
        model,
        tmp_path_factory.mktemp("mf"),
        example_batch={"user_id": torch.tensor([1, 2])},
        user_map=IdMap.build(pa.array(["u0", "u1", "u2"])),
        item_map=IdMap.build(pa.array([100 + i for i in range(NUM_ITEMS)], pa.int64())),
        interactions=seen,
        forms=("torchscript",),
    )


def recommender(path: Path, **spec: object) -> Recommender:
    base = {"name": "toy", "retrieval": {"name": "toy", "path": str(path)}}
    return Recommender.from_bundles(load_deployment({**base, **spec}), load_bundle(path))


def test_exclusions_happen_before_the_cut_so_heavy_users_still_get_k_items(bundle_path: Path) -> None:
    answer = recommender(bundle_path, candidates=2).recommend_batch([RecommendRequest("u1", k=2)])[0]
    assert [item.item_id for item in answer.items] == [105, 106]
    assert [item.score for item in answer.items] == [7.0, 6.0]
    assert answer.rules == ["exclude_seen"] and answer.fallback is None


def test_k_may_exceed_candidates_and_every_item_is_there_once(bundle_path: Path) -> None:
    answer = recommender(bundle_path, candidates=3).recommend_batch([RecommendRequest("u0", k=50)])[0]
    assert [item.item_id for item in answer.items] == [100 + i for i in range(NUM_ITEMS)]
    assert answer.rules == []  # u0 has seen nothing


def test_request_exclusions_blocks_and_unknown_users_in_one_batch(bundle_path: Path) -> None:
    model = recommender(bundle_path, rules={"block_items": [100]})
    own, other, unknown = model.recommend_batch(
        [RecommendRequest("u2", k=3, exclude=[101, 999]), RecommendRequest("u0", k=2), RecommendRequest(7, k=2)]
    )
    assert [item.item_id for item in own.items] == [102, 103, 104]
    assert own.rules == ["exclude_seen", "block", "exclude"]  # u2 saw 111, a candidate too
    assert [item.item_id for item in other.items] == [101, 102] and other.rules == ["block"]
    # Popularity from the bundle's interactions: every seen item once (ties by id), the blocked one left out.
    assert [item.item_id for item in unknown.items] == [101, 102] and unknown.fallback == "popularity: unknown user"
    assert set(own.stage_ms) == {"features", "retrieval", "ranking", "rules"}


def test_score_ranks_given_items_and_closed_recommenders_refuse(bundle_path: Path) -> None:
    model = recommender(bundle_path)
    scored = model.score("u1", [103, 100, 555])
    assert [(item.item_id, item.score) for item in scored.items] == [(100, 12.0), (103, 9.0)]
    assert model.score("stranger", [100, 111]).fallback == "popularity: unknown user"
    with pytest.raises(InvalidInput, match="k must be >= 1"):
        model.recommend_batch([RecommendRequest("u0", k=0)])
    model.close()
    with pytest.raises(InvalidInput, match="is closed"):
        model.recommend_batch([RecommendRequest("u0")])


def test_recommend_table_gives_rows_for_batch_inference(bundle_path: Path) -> None:
    rows = recommender(bundle_path).recommend_table(pa.array(["u1", "nobody"]), 2)
    assert rows.column("user_id").to_pylist() == ["u1", "u1", "nobody", "nobody"]
    assert rows.column("rank").to_pylist() == [1, 2, 1, 2]
    assert rows.column("item_id").to_pylist()[:2] == [105, 106]
    assert rows.column("fallback").to_pylist() == [None, None, "popularity: unknown user", "popularity: unknown user"]
    np.testing.assert_allclose(rows.column("score").to_numpy()[:2], [7.0, 6.0])


def test_a_ranker_with_row_features_reads_them_from_the_request_context(
    bundle_path: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    table = interactions()
    raw_users = [f"u{u % 3}" for u in table.column("user_id").to_pylist()]
    items = [100 + i % NUM_ITEMS for i in table.column("item_id").to_pylist()]
    devices = ["ios" if i % 2 else "web" for i in range(table.num_rows)]
    item_col = pa.array(items, pa.int64())
    table = pa.table({"user_id": raw_users, "item_id": item_col, "rating": table.column("rating"), "device": devices})
    config = TrainConfig(
        model="deepfm", epochs=1, params={"embedding_size": 4, "mlp_hidden_size": [8]}, row_feature_columns=["device"]
    )
    result = train(table, config)
    ranker = load_bundle(write_bundle(result, tmp_path / "ranker", interactions=table, forms=("torchscript",)))
    assert ranker.row_features is not None and ranker.row_features.columns == ["device"]
    spec = {"name": "toy", "retrieval": {"name": "toy", "path": str(bundle_path)}, "logging": {"log_features": True}}
    model = Recommender.from_bundles(load_deployment(spec), load_bundle(bundle_path), ranker)
    ios, web, unknown = model.recommend_batch(
        [
            RecommendRequest("u0", k=3, context={"device": "ios"}),
            RecommendRequest("u0", k=3, context={"device": "web"}),
            RecommendRequest("u0", k=3),
        ]
    )
    assert ios.features == {"device": ["ios"] * 3} and unknown.features == {"device": [None] * 3}
    # The ranker's scores are its own probabilities for the encoded context, pair by pair.
    users, item_ids = ranker.users.encode(["u0"] * 3), ranker.items.encode([i.item_id for i in ios.items])
    encoded = ranker.row_features.encode({"device": ["ios"] * 3})
    expected = result.model.predict(
        {k: torch.from_numpy(np.asarray(v)) for k, v in ranker.ranking_inputs(users, item_ids, encoded).items()}
    )["label"].numpy()
    np.testing.assert_allclose([i.score for i in ios.items], expected, rtol=1e-4, atol=1e-5)
    assert [i.score for i in ios.items] != [i.score for i in web.items]
