"""Matrix factorisation with BPR: shapes, loss contract, swappable tables, and a tiny overfit."""

from __future__ import annotations

import pytest
import torch
from tests.fixtures.retrieval import NUM_ITEMS, NUM_USERS, pairwise_accuracy, planted_interactions, train

from recplane.models.dynamic_embedding import DynamicEmbedding
from recplane.models.embeddings import HashedEmbedding
from recplane.models.mf import MF, bpr_loss


def test_mf_scores_pairs_negatives_and_every_item() -> None:
    model = MF(NUM_USERS, NUM_ITEMS, dim=8)
    batch = {"user_id": torch.tensor([1, 2, 3]), "item_id": torch.tensor([4, 5, 6])}
    assert model(batch)["score"].shape == (3,)
    out = model({**batch, "neg_item_id": torch.tensor([[7, 8], [9, 10], [11, 12]])})
    assert out["score"].shape == (3,) and out["neg_score"].shape == (3, 2)
    assert model({**batch, "neg_item_id": torch.tensor([7, 8, 9])})["neg_score"].shape == (3, 1)
    assert model.user_representation(batch).shape == (3, 8)
    assert model.item_representation().shape == (NUM_ITEMS, 8)
    assert model.item_representation(torch.tensor([1, 2])).shape == (2, 8)
    all_scores = model.score_all(batch)
    assert all_scores.shape == (3, NUM_ITEMS) and bool(torch.isinf(all_scores[:, 0]).all())
    assert set(model.signature().inputs) == {"user_id", "item_id", "neg_item_id"}


def test_mf_loss_needs_negatives() -> None:
    model = MF(NUM_USERS, NUM_ITEMS, dim=4)
    batch = {"user_id": torch.tensor([1]), "item_id": torch.tensor([2])}
    with pytest.raises(ValueError, match="neg_item_id"):
        model.loss(batch, model(batch))


def test_bpr_loss_is_log2_at_a_tie_and_falls_as_the_margin_grows() -> None:
    tie = bpr_loss(torch.zeros(2), torch.zeros(2, 3))
    assert tie.item() == pytest.approx(0.6931, abs=1e-4)
    assert bpr_loss(torch.full((2,), 3.0), torch.zeros(2, 3)) < tie


def test_mf_overfits_a_planted_pattern() -> None:
    torch.manual_seed(0)
    data = planted_interactions()
    model = MF(NUM_USERS, NUM_ITEMS, dim=16, l2=1e-5)
    losses = train(model, data, steps=150)
    assert losses[-1] < 0.2 * losses[0]
    assert pairwise_accuracy(model, data) >= 0.9


def test_mf_trains_on_hashed_and_dynamic_tables() -> None:
    torch.manual_seed(0)
    data = planted_interactions()
    model = MF(
        NUM_USERS,
        NUM_ITEMS,
        user_table=HashedEmbedding(64, 16, scheme="qr"),
        item_table=DynamicEmbedding(16, init_std=0.1, sparse=False),
    )
    losses = train(model, data, steps=150)
    assert losses[-1] < 0.3 * losses[0]
    assert pairwise_accuracy(model, data) >= 0.9
