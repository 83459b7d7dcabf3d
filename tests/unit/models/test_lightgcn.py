"""LightGCN: normalised adjacency by hand, propagation and gradients against dense maths, caching, overfit."""

from __future__ import annotations

import pytest
import torch
from tests.fixtures.retrieval import NUM_ITEMS, NUM_USERS, pairwise_accuracy, planted_interactions, train

from recplane.models.lightgcn import LightGCN, normalized_adjacency

USERS = torch.tensor([1, 1, 2, 1])  # (1, 1) twice: counted once
ITEMS = torch.tensor([1, 2, 1, 1])


def dense_adjacency() -> torch.Tensor:
    indices, values = normalized_adjacency(USERS, ITEMS, num_users=3, num_items=3)
    return torch.sparse_coo_tensor(indices, values, (6, 6), check_invariants=True).to_dense()


def test_normalised_adjacency_matches_a_hand_computation() -> None:
    # Degrees: user 1 -> 2, user 2 -> 1, item 1 -> 2, item 2 -> 1. Item i is node 3 + i.
    expected = torch.zeros(6, 6)
    for user, item, value in [(1, 4, 1 / 2), (1, 5, 2**-0.5), (2, 4, 2**-0.5)]:
        expected[user, item] = expected[item, user] = value
    assert torch.allclose(dense_adjacency(), expected)


def test_out_of_range_interactions_are_rejected() -> None:
    with pytest.raises(ValueError, match="items < 3"):
        normalized_adjacency(torch.tensor([1]), torch.tensor([3]), num_users=3, num_items=3)


def test_propagation_and_its_gradient_equal_the_dense_computation() -> None:
    torch.manual_seed(0)
    model = LightGCN(3, 3, USERS, ITEMS, dim=4, num_layers=2)
    users, items = model.propagate()
    ego = torch.cat([model.user_table.weight, model.item_table.weight]).detach().requires_grad_()
    adjacency = dense_adjacency()
    expected = (ego + adjacency @ ego + adjacency @ (adjacency @ ego)) / 3
    assert torch.allclose(torch.cat([users, items]), expected, atol=1e-6)
    weights = torch.randn(6, 4)
    (torch.cat([users, items]) * weights).sum().backward()
    (expected * weights).sum().backward()
    user_grad, item_grad = model.user_table.weight.grad, model.item_table.weight.grad
    assert ego.grad is not None and user_grad is not None and item_grad is not None
    assert torch.allclose(torch.cat([user_grad, item_grad]), ego.grad, atol=1e-6)


def test_lightgcn_shapes_and_padding_column() -> None:
    data = planted_interactions()
    model = LightGCN(NUM_USERS, NUM_ITEMS, data.user_ids, data.item_ids, dim=8)
    negatives = torch.tensor([[5, 6, 7], [5, 6, 7]])
    batch = {"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([3, 4]), "neg_item_id": negatives}
    out = model(batch)
    assert out["score"].shape == (2,) and out["neg_score"].shape == (2, 3)
    assert "neg_score" not in model({"user_id": batch["user_id"], "item_id": batch["item_id"]})
    assert model.user_representation(batch).shape == (2, 8)
    assert model.item_representation().shape == (NUM_ITEMS, 8)
    assert model.item_representation(torch.tensor([1, 2, 3])).shape == (3, 8)
    scores = model.score_all(batch)
    assert scores.shape == (2, NUM_ITEMS) and bool(torch.isinf(scores[:, 0]).all())
    with pytest.raises(ValueError, match="neg_item_id"):
        plain = {"user_id": batch["user_id"], "item_id": batch["item_id"]}
        model.loss(plain, model(plain))


def test_eval_mode_caches_propagation_until_train_or_load() -> None:
    torch.manual_seed(0)
    data = planted_interactions()
    model = LightGCN(NUM_USERS, NUM_ITEMS, data.user_ids, data.item_ids, dim=4)
    model.eval()
    first = model.item_representation()
    assert model.item_representation() is first
    model.train()
    assert model.item_representation() is not first
    other = LightGCN(NUM_USERS, NUM_ITEMS, data.user_ids, data.item_ids, dim=4)
    model.eval()
    stale = model.item_representation()
    model.load_state_dict(other.state_dict())
    other.eval()
    assert not torch.equal(model.item_representation(), stale)
    assert torch.equal(model.item_representation(), other.item_representation())


def test_lightgcn_overfits_a_planted_pattern() -> None:
    torch.manual_seed(0)
    data = planted_interactions()
    model = LightGCN(NUM_USERS, NUM_ITEMS, data.user_ids, data.item_ids, dim=16, num_layers=2)
    losses = train(model, data, steps=100)
    assert losses[-1] < 0.2 * losses[0]
    assert pairwise_accuracy(model, data) >= 0.9
