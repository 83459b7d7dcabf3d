"""The serving bundle: raw ↔ model ids, per-user interactions, and request-time batches equal to training's."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from tests.fixtures.bundles import interactions, items

from recplane.errors import InvalidInput
from recplane.training import TrainConfig, train
from recplane.training.bundle import IdIndex, UserInteractions, load_bundle, write_bundle
from recplane.training.data import padded_sequences
from recplane.training.feature_tables import build_entity_features

FAST = ("torchscript",)  # one inference form: the others export slowly and are tested in training/test_export


def test_id_index_maps_ints_numeric_strings_and_unknowns() -> None:
    index = IdIndex(pa.array([3, 7, 42], pa.int64()))
    assert index.encode([42, "7", 5, None, "x", 1.5, True]).tolist() == [3, 2, 0, 0, 0, 0, 0]
    assert index.encode(pa.array([3, None], pa.int64())).tolist() == [1, 0]
    assert index.encode(np.array([7, 3])).tolist() == [2, 1]
    assert index.decode(np.array([3, 1])) == [42, 3]
    assert index.num_embeddings == 4


def test_id_index_maps_string_ids_whatever_their_order() -> None:
    index = IdIndex(pa.array(["b", "a", "é", "c"]))  # not sorted: a permutation keeps model ids as given
    assert index.encode(["a", "é", "zz", 5]).tolist() == [2, 3, 0, 0]
    assert index.decode(np.array([1, 4])) == ["b", "c"]


def test_user_interactions_answer_seen_pairs_and_recent_items_in_time_order() -> None:
    table = UserInteractions.build(
        users=np.array([1, 1, 1, 2, 1]),
        items=np.array([5, 6, 5, 7, 8]),
        times=np.array([30, 10, 20, 5, 40]),
        num_users=3,
        num_items=9,
    )
    assert table.seen_counts(np.array([1, 2, 0])).tolist() == [3, 1, 0]
    seen = table.seen(np.array([1, 2]), np.array([[5, 7, -1], [5, 7, 8]]))
    assert seen.tolist() == [[True, False, False], [False, True, False]]
    history, lengths = table.recent(np.array([1, 2, 0]), 3)
    assert history.tolist() == [[5, 5, 8], [7, 0, 0], [0, 0, 0]]  # user 1: 6@10, 5@20, 5@30, 8@40 → last three
    assert lengths.tolist() == [3, 1, 0]


@pytest.fixture(scope="module")
def deepfm(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, pa.Table, pa.Table]:
    """A DeepFM trained with item (categorical, dense, bag) and user features, and its bundle."""
    table = interactions()
    item_table = items().append_column(
        "tags", pa.array([["new"] if i % 3 == 0 else ["sale", "gift"] for i in range(40)], pa.list_(pa.string()))
    )
    user_table = pa.table({"user_id": pa.array(range(30), pa.int64()), "segment": [f"s{u % 3}" for u in range(30)]})
    config = TrainConfig(
        model="deepfm", epochs=1, batch_size=64, params={"embedding_size": 4, "mlp_hidden_size": [8]}, patience=None
    )
    with _torch_threads(1):
        result = train(table, config, item_features=item_table, user_features=user_table)
        folder = write_bundle(
            result,
            tmp_path_factory.mktemp("deepfm"),
            interactions=table,
            item_features=item_table,
            user_features=user_table,
            forms=FAST,
        )
    return result, folder, item_table, user_table


@pytest.fixture(scope="module")
def mf(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A tiny MF and its bundle."""
    with _torch_threads(1):
        config = TrainConfig(model="mf", epochs=1, batch_size=64, params={"dim": 8}, patience=None)
        result = train(interactions(), config)
        return result, write_bundle(result, tmp_path_factory.mktemp("mf"), interactions=interactions(), forms=FAST)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def test_ranking_inputs_equal_the_training_batch_and_predictions_equal_the_model(deepfm: tuple[Any, ...]) -> None:
    result, folder, item_table, user_table = deepfm
    bundle = load_bundle(folder)
    users = np.array([1, 5, 5, 30, 0])
    items_ = np.array([2, 40, 7, 1, 3])
    batch = bundle.ranking_inputs(users, items_)
    item_features = build_entity_features(item_table, "item_id", result.item_map, what="item feature")
    user_features = build_entity_features(user_table, "user_id", result.user_map, what="user feature")
    expected = {"user_id": torch.from_numpy(users), "item_id": torch.from_numpy(items_)}
    expected.update(item_features.take(torch.from_numpy(items_)))
    expected.update(user_features.take(torch.from_numpy(users)))
    assert set(batch) == set(expected) == {spec.name for spec in bundle.inputs}
    for key, value in expected.items():
        np.testing.assert_array_equal(batch[key], value.numpy(), err_msg=key)
    probabilities = bundle.rank(users, items_)["label"]
    want = result.model.predict({k: v for k, v in expected.items()})["label"].numpy()
    np.testing.assert_allclose(probabilities, want, rtol=1e-4, atol=1e-5)


def test_a_retrieval_bundle_gives_the_models_query_vectors_and_seen_items(mf: tuple[Any, Path]) -> None:
    table = interactions()
    result, folder = mf
    bundle = load_bundle(folder)
    users = bundle.users.encode([0, 7, 29])
    want = result.model.user_representation({"user_id": torch.from_numpy(users)}).detach().numpy()
    np.testing.assert_allclose(bundle.query_vectors(users), want, rtol=1e-4, atol=1e-5)
    assert bundle.interactions is not None
    first_user_items = table.filter(pa.compute.equal(table.column("user_id"), 0)).column("item_id").to_pylist()
    seen = bundle.interactions.seen(users[:1], bundle.items.encode(first_user_items)[None, :])
    assert seen.all()
    counts = np.bincount(bundle.items.encode(table.column("item_id")), minlength=bundle.items.num_embeddings)
    np.testing.assert_array_equal(bundle.interactions.item_counts, counts)


def test_an_exported_folder_without_serving_files_is_refused(mf: tuple[Any, Path], tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(mf[1], folder)
    (folder / "item_ids.parquet").unlink()
    with pytest.raises(InvalidInput, match="not a serving bundle"):
        load_bundle(folder)


def test_ranking_inputs_name_what_the_bundle_cannot_supply(deepfm: tuple[Any, ...]) -> None:
    bundle = load_bundle(deepfm[1])
    bundle.item_features.pop("price")
    with pytest.raises(InvalidInput, match="reads 'price', which this bundle cannot supply"):
        bundle.ranking_inputs(np.array([1]), np.array([1]))
    with pytest.raises(InvalidInput, match="one user and one item per row"):
        bundle.ranking_inputs(np.array([1, 2]), np.array([1]))


def test_a_sequence_model_reads_each_users_latest_items_from_the_bundle(tmp_path: Path) -> None:
    table = interactions()
    params = {"max_seq_length": 4, "hidden_size": 8, "n_layers": 1, "n_heads": 1, "inner_size": 8}
    with _torch_threads(1):
        result = train(table, TrainConfig(model="sasrec", epochs=1, params=params, patience=None))
        bundle = load_bundle(write_bundle(result, tmp_path / "sasrec", interactions=table, forms=FAST))
    users = bundle.users.encode([0, 11, "unknown"])
    batch = bundle.query_inputs(users)
    encoded_users = result.user_map.encode(table.column("user_id"))
    encoded_items = result.item_map.encode(table.column("item_id"))
    times = table.column("ts").cast(pa.int64()).to_numpy()
    history, lengths = padded_sequences(encoded_users, encoded_items, times, result.user_map.num_embeddings, 4)
    np.testing.assert_array_equal(batch["history"], history[users].numpy())
    np.testing.assert_array_equal(batch["history_len"], lengths[users].numpy())
    assert batch["history_len"].tolist()[2] == 0
    want = result.model.user_representation({k: torch.from_numpy(v) for k, v in batch.items()}).detach().numpy()
    np.testing.assert_allclose(bundle.query_vectors(users), want, rtol=1e-4, atol=1e-5)
