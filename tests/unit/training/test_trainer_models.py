"""The trainer beyond MF/LightGCN/SASRec: ranking and multi-task models, two-tower, and side-feature tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from recplane.errors import InvalidInput
from recplane.training.data import IdMap
from recplane.training.evaluate import evaluate_full_sort
from recplane.training.feature_tables import build_entity_features
from recplane.training.ranking_task import RankingTask
from recplane.training.retrieval_tasks import PairwiseTask
from recplane.training.trainer import TrainConfig, TrainResult, train

CLUSTERS, USERS, ITEMS, PER_USER = 4, 60, 40, 20




def rated_interactions(seed: int = 0) -> pa.Table:
    """Users of cluster c (user % 4) rate items of cluster c (item % 4) 5 and others 2, with 10% flipped.

    Half of each user's items come from its own cluster, so "liked" is a user-by-item-cluster pattern.
    """
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(USERS), PER_USER)
    own = rng.random(len(users)) < 0.5
    cluster = np.where(own, users % CLUSTERS, (users % CLUSTERS + rng.integers(1, CLUSTERS, len(users))) % CLUSTERS)
    items = rng.integers(0, ITEMS // CLUSTERS, len(users)) * CLUSTERS + cluster
    liked = (cluster == users % CLUSTERS) ^ (rng.random(len(users)) < 0.1)
    return pa.table(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": items.astype(np.int64),
            "ts": np.arange(len(users), dtype=np.int64),
            "rating": np.where(liked, 5.0, 2.0),
        }
    )


def item_features(dim: int = 4) -> pa.Table:
    """A categorical genre (the item's cluster) and a noisy one-hot vector of it, for every item."""
    rng = np.random.default_rng(1)
    vectors = np.eye(dim, dtype=np.float32)[np.arange(ITEMS) % CLUSTERS] + rng.normal(0, 0.1, (ITEMS, dim))
    return pa.table(
        {
            "item_id": np.arange(ITEMS, dtype=np.int64),
            "genre": [f"g{i % CLUSTERS}" for i in range(ITEMS)],
            "text_vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        }
    )


SMALL_PARAMS: dict[str, dict[str, object]] = {
    "deepfm": {"mlp_hidden_size": (32,)},
    "dcn": {"mlp_hidden_size": (32,), "embedding_size": 8, "cross_layer_num": 2},
    "din": {"mlp_hidden_size": (32,), "attention_hidden_size": (16,)},
    "mmoe": {"expert_hidden_size": (32,), "num_experts": 2, "tower_hidden_size": (16,)},
    "moe": {"num_experts": 4, "expert_hidden_size": 32, "expert_output_size": 16, "tower_hidden_size": (16,)},
}


def ranking_config(model: str, **overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        "model": model,
        "params": SMALL_PARAMS[model],
        "epochs": 6,
        "batch_size": 128,
        "lr": 0.01,
        "seed": 1,
        "patience": None,
        "max_history": 8,
    }
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def _parameters_equal(a: TrainResult, b: TrainResult) -> bool:
    left, right = a.model.state_dict(), b.model.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize("model", ["deepfm", "dcn", "din", "mmoe", "moe"])
def test_ranking_models_learn_the_planted_preference_with_item_features(model: str) -> None:
    result = train(rated_interactions(), ranking_config(model), item_features=item_features())
    metrics = result.test_metrics
    assert metrics["auc"] > 0.7
    assert {"auc", "gauc", "logloss"} <= set(metrics)
    assert result.valid_metric == "auc" and result.best_valid is not None
    assert result.protocol.model_kind == "context" and result.protocol.label_threshold == ("rating", 4.0)
    assert result.num_parameters == sum(p.numel() for p in result.model.parameters())
    assert len(result.epochs) == 6 and result.epochs[-1].loss < result.epochs[0].loss
    if model in ("mmoe", "moe"):
        # "auc" is the click task's; the like task (rating >= 4) is the planted preference.
        assert metrics["like_auc"] > 0.8
        assert {"like_gauc", "like_logloss"} <= set(metrics)


def test_a_label_column_takes_precedence_over_ratings() -> None:
    table = rated_interactions()
    liked = pa.compute.greater_equal(table.column("rating"), 4.0).cast(pa.int8())
    table = table.drop_columns(["rating"]).append_column("label", liked)
    result = train(table, ranking_config("deepfm"), item_features=item_features())
    assert result.protocol.label_threshold is None
    assert result.test_metrics["auc"] > 0.7


def test_ranking_without_label_or_rating_is_rejected_with_the_columns_to_add() -> None:
    table = rated_interactions().drop_columns(["rating"])
    with pytest.raises(InvalidInput, match="neither a 'label' column"):
        train(table, ranking_config("deepfm"))
    with pytest.raises(InvalidInput, match="needs a 'ts' column"):
        train(rated_interactions().drop_columns(["ts"]), ranking_config("din"))


def test_multi_task_rows_add_sampled_unobserved_items_as_unlabelled_non_clicks() -> None:
    table = rated_interactions()
    task = RankingTask(table, ranking_config("mmoe", click_negatives=2), None, None)
    rows = task.parts["train"]
    observed = int((rows.labels["click"] == 1).sum())
    assert len(rows) == 3 * observed
    sampled = rows.labels["click"] == 0
    assert bool(torch.isnan(rows.labels["like"][sampled]).all())
    assert not bool(torch.isnan(rows.labels["like"][~sampled]).any())
    seen = set(
        zip(
            task.users.encode(table.column("user_id")).tolist(),
            task.items.encode(table.column("item_id")).tolist(),
            strict=True,
        )
    )
    pairs = zip(rows.users[sampled].tolist(), rows.items[sampled].tolist(), strict=True)
    assert not any(pair in seen for pair in pairs)


def test_din_history_holds_the_most_recent_earlier_training_items() -> None:
    task = RankingTask(rated_interactions(), ranking_config("din", max_history=3), None, None)
    train_rows = task.parts["train"]
    batch = task.features(train_rows, torch.arange(len(train_rows)))
    # Training rows keep the table's order of ts here (ts = row number), so "earlier" is "earlier in the list".
    for row in (0, 5, 100, len(train_rows) - 1):
        user = int(train_rows.users[row])
        earlier = [
            int(item)
            for r, item in enumerate(train_rows.items.tolist())
            if r < row and int(train_rows.users[r]) == user
        ]
        expected = earlier[-3:]
        assert batch["history_len"][row] == len(expected)
        assert batch["history"][row, : len(expected)].tolist() == expected
        assert bool((batch["history"][row, len(expected) :] == 0).all())


def test_ranking_resume_from_an_epoch_checkpoint_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    table, features = rated_interactions(), item_features()
    straight = train(table, ranking_config("deepfm", epochs=2), item_features=features)
    train(table, ranking_config("deepfm", epochs=1, checkpoint_dir=str(tmp_path)), item_features=features)
    resumed = train(
        table, ranking_config("deepfm", epochs=2), item_features=features, resume_from=tmp_path / "epoch-0001.pt"
    )
    assert resumed.step_losses == straight.step_losses
    assert resumed.test_metrics == straight.test_metrics
    assert _parameters_equal(resumed, straight)


def test_ranking_early_stopping_uses_auc() -> None:
    result = train(rated_interactions(), ranking_config("deepfm", epochs=10, lr=0.0, patience=2))
    assert result.stopped_early and len(result.epochs) == 3 and result.best_epoch == 0


def two_tower_config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        "model": "two_tower",
        "params": {"embedding_dim": 16, "tower_dims": (16,), "temperature": 0.1},
        "epochs": 10,
        "batch_size": 64,
        "lr": 0.01,
        "seed": 3,
        "patience": None,
        "max_history": 10,
    }
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def popularity_recall_at_10(table: pa.Table) -> float:
    """Recall@10 of ranking items by training popularity under the same split and exclusions as the trainer."""
    task = PairwiseTask(table, TrainConfig(model="mf"))
    counts = torch.bincount(task.train_items - 1, minlength=task.num_items - 1).float()
    train_pairs = task.interactions("train")
    result = evaluate_full_sort(
        lambda users: counts.expand(len(users), -1).clone(),
        task.interactions("test"),
        num_items=task.num_items - 1,
        exclude=[train_pairs, task.interactions("valid")],
        ks=(10,),
        metrics=("recall",),
    )
    return result.metrics["recall@10"]


def test_two_tower_with_item_features_beats_popularity() -> None:
    table = rated_interactions()
    result = train(table, two_tower_config(), item_features=item_features())
    assert result.test_metrics["recall@10"] > popularity_recall_at_10(table) + 0.1
    assert result.valid_metric == "mrr@10" and result.protocol.model_kind == "general"
    config = result.model.config  # type: ignore[attr-defined]
    assert config.item_categorical == {"genre": CLUSTERS + 1} and config.item_vector_dim == 4


def test_two_tower_trains_with_sampled_negatives_and_user_features() -> None:
    users = pa.table({"user_id": [f"u{u}" for u in range(USERS)], "segment": [u % CLUSTERS for u in range(USERS)]})
    params = {"embedding_dim": 16, "tower_dims": (16,), "temperature": 0.1, "negatives": "mixed"}
    result = train(rated_interactions(), two_tower_config(params=params, epochs=3), user_features=users)
    assert np.isfinite(result.step_losses).all()
    assert result.model.config.user_categorical == {"segment": CLUSTERS + 1}  # type: ignore[attr-defined]


def test_feature_tables_are_encoded_per_model_id_with_unknowns_as_zero() -> None:
    ids = IdMap.build(pa.array([10, 20, 30]))
    table = pa.table(
        {
            "item_id": [30, 10, 99],  # 20 has no row; 99 is not an interacted item
            "genre": ["b", None, "a"],
            "tags": [["x", "y"], [], ["y"]],
            "price": [1.5, None, 3.0],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], pa.float32()), 2),
        }
    )
    features = build_entity_features(table, "item_id", ids, what="item feature")
    # Model ids: 10 → 1, 20 → 2, 30 → 3; genre vocabulary a → 1, b → 2.
    assert features.categorical["genre"].tolist() == [0, 0, 0, 2]
    assert features.cardinalities == {"genre": 3, "tags": 3}
    bags, lengths = features.bags["tags"]
    assert lengths.tolist() == [0, 0, 0, 2] and bags[3].tolist() == [1, 2]
    assert features.dense["price"].squeeze(1).tolist() == [0.0, 0.0, 0.0, 1.5]
    assert features.dense["vector"].tolist() == [[0, 0], [3, 4], [0, 0], [1, 2]]
    assert set(features.take(torch.tensor([3, 1]))) == {"genre", "tags", "tags_len", "price", "vector"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"item_id": [1, 2], "scores": [[0.5], [0.1]]}), "not a feature type"),
        (pa.table({"id": [1, 2], "genre": ["a", "b"]}), "no 'item_id' column"),
        (pa.table({"item_id": [1, 1], "genre": ["a", "b"]}), "duplicate 'item_id'"),
        (pa.table({"item_id": [1, 2], "label": ["a", "b"]}), "clashes with a batch key"),
    ],
)
def test_bad_feature_tables_are_rejected_with_a_clear_error(table: pa.Table, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        train(rated_interactions(), ranking_config("deepfm", epochs=1), item_features=table)


def test_models_without_side_features_refuse_them() -> None:
    with pytest.raises(InvalidInput, match="reads no side features"):
        train(rated_interactions(), TrainConfig(model="mf", epochs=1), item_features=item_features())
    with pytest.raises(InvalidInput, match="derived from the data"):
        train(rated_interactions(), ranking_config("deepfm", params={"sparse_fields": ()}))
