"""The recommendation pipeline over real trained, registered models: answers equal a brute-force top-k of the
models' own scores, seen items never come back, unknown users get a flagged fallback, rules shape the answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from tests.fixtures.bundles import CATEGORIES, interactions, items

from recplane.config import Settings
from recplane.runtime import Runtime
from recplane.serving.recommender import Recommender, RecommendRequest
from recplane.serving.spec import DeploymentSpec, load_deployment
from recplane.training.bundle import load_bundle

pytestmark = pytest.mark.integration

RATINGS = {
    "name": "ratings",
    "event_time": "ts",
    "columns": {"user_id": "int64", "item_id": "int64", "rating": "float32", "ts": "timestamp"},
}
ITEMS = {"name": "shop_items", "columns": {"item_id": "int64", "category": "string", "price": "float32"}}


@dataclass
class Platform:
    runtime: Runtime
    ratings: pa.Table


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A home with ratings and items, an MF and a DeepFM trained on them, registered and aliased production."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    settings = Settings(home=tmp_path_factory.mktemp("home"), group_commit_max_wait_ms=2.0)
    runtime = Runtime(settings)
    try:
        runtime.datasets.create(RATINGS, principal=_admin())
        runtime.datasets.create(ITEMS, principal=_admin())
        ratings = interactions()
        runtime.datasets.replace("ratings", ratings, principal=_admin())
        runtime.datasets.replace("shop_items", items(), principal=_admin())
        trained = {
            "mf-shop": {"model": "mf", "epochs": 3, "batch_size": 32, "lr": 0.05, "params": {"dim": 8}},
            "deepfm-shop": {"model": "deepfm", "epochs": 2, "batch_size": 32, "params": {"embedding_size": 4}},
        }
        for name, train in trained.items():
            run = runtime.training.train({"dataset": "ratings", "train": {**train, "patience": None}}).run
            version = runtime.registry.register(name, run_id=run.id)
            runtime.registry.set_alias(name, "production", version.version)
        yield Platform(runtime, ratings)
    finally:
        runtime.close()
        torch.set_num_threads(previous)


def _admin() -> Any:
    from recplane.auth import ADMIN

    return ADMIN


def deployment(**changes: Any) -> DeploymentSpec:
    base: dict[str, Any] = {"name": "shop", "retrieval": {"name": "mf-shop"}, "index": "exact", "k": 5}
    return load_deployment({**base, **changes})


def seen_by(ratings: pa.Table, user: int) -> set[int]:
    return set(ratings.filter(pc.equal(ratings.column("user_id"), user)).column("item_id").to_pylist())


def brute_force_top_k(recommender: Recommender, user: int, ratings: pa.Table, k: int) -> tuple[list[int], np.ndarray]:
    """The retrieval model's own scores of every item, seen items removed, top k."""
    bundle = recommender.retrieval
    query = bundle.query_vectors(bundle.users.encode([user]))[0]
    scores = bundle.item_vectors[1:] @ query
    raw = bundle.items.decode(np.arange(1, len(bundle.items) + 1))
    scores[[raw.index(item) for item in seen_by(ratings, user)]] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    return [raw[i] for i in top], scores[top]


def test_known_users_get_the_models_top_k_without_their_seen_items(platform: Platform) -> None:
    recommender = Recommender.load(deployment(), platform.runtime)
    assert recommender.model_versions == {"retrieval": "mf-shop:1"}
    users = [0, 3, 17, 29]
    answers = recommender.recommend_batch([RecommendRequest(user, k=5) for user in users])
    for user, answer in zip(users, answers, strict=True):
        got = [item.item_id for item in answer.items]
        want, scores = brute_force_top_k(recommender, user, platform.ratings, 5)
        assert got == want
        np.testing.assert_allclose([item.score for item in answer.items], scores, rtol=1e-5, atol=1e-6)
        assert not set(got) & seen_by(platform.ratings, user)
        assert answer.fallback is None and answer.rules == ["exclude_seen"]
        assert set(answer.stage_ms) == {"features", "retrieval", "ranking", "rules"}


def test_unknown_users_get_the_most_popular_items_flagged_as_fallback(platform: Platform) -> None:
    recommender = Recommender.load(deployment(), platform.runtime)
    answer = recommender.recommend_batch([RecommendRequest("no-such-user", k=4)])[0]
    counts = pc.value_counts(platform.ratings.column("item_id")).to_pylist()
    ranked = sorted(counts, key=lambda c: (-c["counts"], c["values"]))
    assert [item.item_id for item in answer.items] == [c["values"] for c in ranked[:4]]
    assert [item.score for item in answer.items] == [float(c["counts"]) for c in ranked[:4]]
    assert answer.fallback == "popularity: unknown user"


def test_cold_users_and_content_fallback(platform: Platform) -> None:
    recommender = Recommender.load(
        deployment(fallback={"kind": "content", "min_interactions": 100}), platform.runtime
    )
    cold, similar = recommender.recommend_batch(
        [RecommendRequest(3, k=3), RecommendRequest(999, k=3, context={"item_id": 8})]
    )
    assert cold.fallback is not None and cold.fallback.startswith("popularity: cold user (")
    assert not {item.item_id for item in cold.items} & seen_by(platform.ratings, 3)
    assert similar.fallback == "content: unknown user, items like 8"
    vectors = recommender.retrieval.item_vectors
    anchor = vectors[recommender.retrieval.items.encode([8])[0]]
    ids = recommender.retrieval.items.encode([item.item_id for item in similar.items])
    scores = vectors[1:] @ anchor
    scores[recommender.retrieval.items.encode([8])[0] - 1] = -np.inf
    assert ids.tolist() == (np.argsort(-scores, kind="stable")[:3] + 1).tolist()


def test_a_ranker_reorders_the_candidates_by_its_own_scores(platform: Platform) -> None:
    recommender = Recommender.load(deployment(ranking={"name": "deepfm-shop"}), platform.runtime)
    assert recommender.model_versions == {"retrieval": "mf-shop:1", "ranking": "deepfm-shop:1"}
    answer = recommender.recommend_batch([RecommendRequest(5, k=6)])[0]
    ranker = recommender.ranking
    assert ranker is not None
    # 40 items and 200 candidates: every unseen item is a candidate, so the answer is the ranker's top 6 of them.
    unseen = [item for item in items().column("item_id").to_pylist() if item not in seen_by(platform.ratings, 5)]
    probabilities = ranker.rank(
        ranker.users.encode([5] * len(unseen)), ranker.items.encode(unseen)
    )["label"]
    order = np.argsort(-probabilities, kind="stable")[:6]
    assert [item.item_id for item in answer.items] == [unseen[i] for i in order]
    np.testing.assert_allclose([item.score for item in answer.items], probabilities[order], rtol=1e-5)
    assert answer.stage_ms["ranking"] > 0


def test_category_cap_boosts_and_blocks_shape_the_answer(platform: Platform) -> None:
    rules = {
        "items": "shop_items",
        "max_per_category": 1,
        "block_items": [0, 1, 2, 3],
        "block_categories": ["toys"],
    }
    recommender = Recommender.load(deployment(rules=rules), platform.runtime)
    answer = recommender.recommend_batch([RecommendRequest(7, k=10, exclude=[4, 5])])[0]
    got = [item.item_id for item in answer.items]
    categories = [CATEGORIES[item % 4] for item in got]
    assert len(got) == 3 and len(set(categories)) == 3 and "toys" not in categories
    assert not set(got) & {0, 1, 2, 3, 4, 5}
    assert "max_per_category" in answer.rules and "block" in answer.rules and "exclude" in answer.rules
    boosted = Recommender.load(
        deployment(rules={"items": "shop_items", "boosts": [{"category": "toys", "add": 100.0}]}), platform.runtime
    )
    top = boosted.recommend_batch([RecommendRequest(7, k=3)])[0]
    assert all(CATEGORIES[item.item_id % 4] == "toys" for item in top.items) and "boost" in top.rules


def test_batches_and_concurrent_callers_get_the_same_answers_as_single_requests(platform: Platform) -> None:
    recommender = Recommender.load(deployment(ranking={"name": "deepfm-shop"}), platform.runtime)
    requests = [RecommendRequest(user, k=4) for user in [1, 2, "x", 8, 13, 21]]
    single = [[i.item_id for i in recommender.recommend_batch([r])[0].items] for r in requests]
    batched = [[i.item_id for i in answer.items] for answer in recommender.recommend_batch(requests)]
    assert batched == single
    results: list[list[list[Any]]] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            for _ in range(5):
                results.append([[i.item_id for i in a.items] for a in recommender.recommend_batch(requests)])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 20 and all(result == single for result in results)


def test_score_ranks_given_items_and_hnsw_index_is_cached_with_the_bundle(platform: Platform) -> None:
    recommender = Recommender.load(deployment(index="hnsw"), platform.runtime)
    assert (recommender.retrieval.path / "index" / "hnsw.faiss").is_file()
    scored = recommender.score(3, [10, 11, 12, 404])
    assert sorted(item.item_id for item in scored.items) == [10, 11, 12]
    scores = [item.score for item in scored.items]
    assert scores == sorted(scores, reverse=True)
    want, _ = brute_force_top_k(recommender, 3, platform.ratings, 5)
    assert [item.item_id for item in recommender.recommend_batch([RecommendRequest(3, k=5)])[0].items] == want
    recommender.warm_up()


def test_a_deployment_can_serve_a_bundle_folder_without_the_registry(platform: Platform) -> None:
    path = platform.runtime.registry.local_path(platform.runtime.registry.resolve("mf-shop", "production"))
    recommender = Recommender.from_bundles(deployment(), load_bundle(Path(path)))
    answer = recommender.recommend_batch([RecommendRequest(0, k=5)])[0]
    assert [item.item_id for item in answer.items] == brute_force_top_k(recommender, 0, platform.ratings, 5)[0]
