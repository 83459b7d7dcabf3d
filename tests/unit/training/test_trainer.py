"""The single-process trainer: models learn planted patterns, runs are seeded, resume is exact, early stop works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from recplane.errors import InvalidInput
from recplane.training import trainer as trainer_module
from recplane.training.data import BatchOrder, IdMap, padded_sequences
from recplane.training.trainer import TrainConfig, TrainResult, train

NUM_CLUSTERS = 4
ITEMS_PER_CLUSTER = 10


def clustered_interactions(num_users: int = 80, per_user: int = 8, seed: int = 0) -> pa.Table:
    """Each user interacts only with items of its own cluster (user % 4): a pattern MF and LightGCN can learn.

    Raw ids are strings so that the id maps are exercised.
    """
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(num_users):
        cluster = user % NUM_CLUSTERS
        chosen = rng.choice(ITEMS_PER_CLUSTER, size=per_user, replace=False) * NUM_CLUSTERS + cluster
        users += [f"u{user}"] * per_user
        items += [f"i{item}" for item in chosen]
    return pa.table({"user_id": users, "item_id": items, "ts": np.arange(len(users), dtype=np.int64)})


def cyclic_sequences(num_users: int = 120, length: int = 10, num_items: int = 30, seed: int = 0) -> pa.Table:
    """Each user walks the item cycle 0 → 1 → ... → 29 → 0 from a random start: the next item is determined."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, num_items, size=num_users)
    users = np.repeat(np.arange(num_users), length)
    items = (starts[:, None] + np.arange(length)[None, :]).reshape(-1) % num_items
    ts = np.tile(np.arange(length), num_users) * 10 + 1_000
    return pa.table({"user_id": users.astype(np.int64), "item_id": items.astype(np.int64), "ts": ts.astype(np.int64)})


def general_config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        "model": "mf",
        "params": {"dim": 16, "l2": 0.0},
        "epochs": 15,
        "batch_size": 64,
        "lr": 0.05,
        "seed": 7,
        "patience": None,
    }
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


# Random full-sort ranking of ~40 items with a user's ~6 training items excluded: Recall@10 ≈ 10 / 34 ≈ 0.3.
RANDOM_RECALL_AT_10 = 0.35


def test_id_map_assigns_sorted_ids_from_one_and_round_trips() -> None:
    ids = IdMap.build(pa.array(["b", "a", "c", "a"]))
    assert ids.num_embeddings == 4
    assert ids.encode(pa.array(["a", "c", "b"])).tolist() == [1, 3, 2]
    assert ids.decode(np.array([3, 1])).to_pylist() == ["c", "a"]
    with pytest.raises(InvalidInput, match="not in the id map"):
        ids.encode(pa.array(["z"]))


def test_padded_sequences_keep_the_newest_items_in_time_order_right_padded() -> None:
    users = np.array([1, 1, 1, 2, 1], dtype=np.int64)
    items = np.array([5, 6, 7, 9, 8], dtype=np.int64)
    times = np.array([30, 10, 20, 5, 40], dtype=np.int64)
    sequences, lengths = padded_sequences(users, items, times, num_users=3, max_len=3)
    assert sequences.tolist() == [[0, 0, 0], [7, 5, 8], [9, 0, 0]]
    assert lengths.tolist() == [0, 3, 1]


def _batch_rows(order: BatchOrder, epoch: int, steps: int, start: int = 0) -> list[tuple[int, list[int]]]:
    """(position, rows) of every batch the chunks of an epoch yield (a chunk's "batch" is its row indices)."""
    return [
        (position, batch["rows"].tolist())
        for chunk in order.chunks(epoch, steps, start)
        for position, _, batch in chunk.batches({"rows": chunk.rows})
    ]


def test_batch_order_covers_every_row_once_per_epoch_and_differs_between_epochs() -> None:
    order = BatchOrder(num_rows=10, batch_size=4, seed=1)
    first = [row for _, rows in _batch_rows(order, 0, steps=1) for row in rows]
    assert sorted(first) == list(range(10))
    assert first != [row for _, rows in _batch_rows(order, 1, steps=1) for row in rows]
    assert [position for position, _ in _batch_rows(order, 0, steps=1, start=2)] == [2]


@pytest.mark.parametrize("steps", [1, 2, 3, 50])
def test_chunks_cut_the_same_batches_whatever_their_size_and_resume_inside_a_chunk(steps: int) -> None:
    order = BatchOrder(num_rows=23, batch_size=4, seed=5)
    one_by_one = _batch_rows(order, 3, steps=1)
    assert [len(rows) for _, rows in one_by_one] == [4, 4, 4, 4, 4, 3]
    assert _batch_rows(order, 3, steps) == one_by_one
    assert _batch_rows(order, 3, steps, start=4) == one_by_one[4:]
    # A chunk started mid-way still holds every row from its fixed first position, so a resume rebuilds it whole.
    chunk = next(order.chunks(3, steps, start=4))
    assert chunk.first == 4 - 4 % steps and chunk.start == 4
    assert len(chunk.rows) == min(4 * steps, 23 - 4 * chunk.first)


def test_chunk_batches_slice_per_row_tensors_and_share_the_others() -> None:
    chunk = next(BatchOrder(num_rows=6, batch_size=4, seed=0).chunks(0, steps=2))
    shared = torch.arange(3)
    built = {"rows": chunk.rows, "pair": torch.stack([chunk.rows, chunk.rows], 1), "shared": shared}
    batches = list(chunk.batches(built))
    assert [(position, rows) for position, rows, _ in batches] == [(0, 4), (1, 2)]
    assert torch.equal(batches[1][2]["pair"], built["pair"][4:])
    assert batches[1][2]["shared"] is shared


@pytest.mark.parametrize("model", ["mf", "lightgcn"])
def test_general_models_beat_random_recall_on_held_out_interactions(model: str) -> None:
    params = {"dim": 16, "l2": 0.0} if model == "mf" else {"dim": 16, "num_layers": 2, "l2": 0.0}
    result = train(clustered_interactions(), general_config(model=model, params=params))
    assert result.test_metrics["recall@10"] > RANDOM_RECALL_AT_10 + 0.3
    if model == "mf":
        # Untrained MF (lr=0) ranks at random, which is what the constant above stands for. (Untrained LightGCN
        # already scores above random: propagation over the graph alone carries the cluster structure.)
        untrained = train(clustered_interactions(), general_config(params=params, epochs=1, lr=0.0))
        assert untrained.test_metrics["recall@10"] < RANDOM_RECALL_AT_10
    assert len(result.epochs) == 15
    assert result.epochs[-1].loss < result.epochs[0].loss
    assert result.best_valid is not None and result.valid_metric == "mrr@10"
    assert result.samples_per_second > 0 and result.train_seconds > 0


def test_popularity_negatives_train_too() -> None:
    result = train(clustered_interactions(), general_config(negatives="popularity", epochs=10))
    assert result.test_metrics["recall@10"] > RANDOM_RECALL_AT_10 + 0.2


def test_sasrec_learns_next_item_on_leave_one_out_sequences() -> None:
    config = TrainConfig(
        model="sasrec",
        params={
            "max_seq_length": 12,
            "hidden_size": 32,
            "n_layers": 1,
            "n_heads": 1,
            "inner_size": 32,
            "hidden_dropout_prob": 0.1,
            "attn_dropout_prob": 0.1,
        },
        epochs=25,
        batch_size=32,
        lr=0.01,
        seed=3,
        patience=None,
    )
    result = train(cyclic_sequences(), config)
    # Random ranking of 30 items: Recall@10 = 1/3.
    assert result.test_metrics["recall@10"] > 0.8
    assert result.valid_metric == "mrr@10"


def test_seeded_runs_give_identical_losses_and_parameters() -> None:
    table = clustered_interactions()
    first = train(table, general_config(epochs=3))
    second = train(table, general_config(epochs=3))
    assert first.step_losses == second.step_losses
    assert _parameters_equal(first, second)
    third = train(table, general_config(epochs=3, seed=8))
    assert third.step_losses != first.step_losses


def _parameters_equal(a: TrainResult, b: TrainResult) -> bool:
    left, right = a.model.state_dict(), b.model.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize("model", ["mf", "sasrec"])
def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(model: str, tmp_path: Path) -> None:
    if model == "mf":
        table, config = clustered_interactions(), general_config(epochs=2)
    else:
        table = cyclic_sequences(num_users=40)
        config = TrainConfig(
            model="sasrec",
            params={"max_seq_length": 12, "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 16},
            epochs=2,
            batch_size=16,
            seed=3,
            patience=None,
        )
    straight = train(table, config)
    config.epochs, config.checkpoint_dir = 1, str(tmp_path)
    first_half = train(table, config)
    assert first_half.checkpoint == tmp_path / "epoch-0001.pt"
    config.epochs, config.checkpoint_dir = 2, None
    resumed = train(table, config, resume_from=tmp_path / "epoch-0001.pt")
    assert resumed.step_losses == straight.step_losses
    assert [e.loss for e in resumed.epochs] == [e.loss for e in straight.epochs]
    assert _parameters_equal(resumed, straight)


def test_resume_mid_epoch_continues_with_the_same_next_batch(tmp_path: Path) -> None:
    table = clustered_interactions()
    straight = train(table, general_config(epochs=2))
    steps_per_epoch = len(straight.step_losses) // 2
    checkpointed = train(table, general_config(epochs=2, checkpoint_every_steps=3, checkpoint_dir=str(tmp_path)))
    assert checkpointed.step_losses == straight.step_losses
    step = 3 * (steps_per_epoch // 3 + 1)  # a checkpoint inside the second epoch
    assert step % steps_per_epoch != 0
    resumed = train(table, general_config(epochs=2), resume_from=tmp_path / f"step-{step:08d}.pt")
    assert resumed.step_losses == straight.step_losses
    assert _parameters_equal(resumed, straight)


def test_resume_inside_a_later_chunk_of_several_matches_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 2 batches (one batch of general_config is 64 rows of 3 int64 ids: 1,536 bytes).
    monkeypatch.setattr(trainer_module, "_CHUNK_BYTES", 2 * 64 * 24)
    table = clustered_interactions()
    straight = train(table, general_config(epochs=2))
    steps_per_epoch = len(straight.step_losses) // 2
    assert steps_per_epoch >= 6
    train(table, general_config(epochs=2, checkpoint_every_steps=1, checkpoint_dir=str(tmp_path)))
    for step in (steps_per_epoch + 3, steps_per_epoch + 4):  # inside a chunk, then at a chunk boundary
        resumed = train(table, general_config(epochs=2), resume_from=tmp_path / f"step-{step:08d}.pt")
        assert resumed.step_losses == straight.step_losses
        assert _parameters_equal(resumed, straight)


def test_resume_refuses_a_checkpoint_from_different_settings(tmp_path: Path) -> None:
    table = clustered_interactions()
    train(table, general_config(epochs=1, checkpoint_dir=str(tmp_path)))
    with pytest.raises(InvalidInput, match="different settings"):
        train(table, general_config(epochs=2, lr=0.5), resume_from=tmp_path / "latest.pt")


def test_early_stopping_stops_when_the_valid_metric_stops_improving() -> None:
    # lr=0: the model never changes, so the valid metric never improves after the first epoch.
    result = train(clustered_interactions(), general_config(epochs=20, lr=0.0, patience=2))
    assert result.stopped_early
    assert len(result.epochs) == 3
    assert result.best_epoch == 0


def test_grad_clip_and_unknown_settings() -> None:
    result = train(clustered_interactions(), general_config(epochs=1, grad_clip=0.1, optimizer="sgd"))
    assert len(result.step_losses) > 0
    with pytest.raises(InvalidInput, match="Unknown model"):
        TrainConfig(model="nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="Invalid params"):
        train(clustered_interactions(), general_config(params={"bogus": 1}))
