"""Two-tower retrieval: feature plumbing, loss variants, logQ correction and a tiny overfit."""

from __future__ import annotations

import pytest
import torch
from tests.fixtures.retrieval import NUM_ITEMS, NUM_USERS, pairwise_accuracy, planted_interactions, train

from recplane.models.two_tower import TwoTower, TwoTowerConfig, in_batch_softmax_loss


def full_config(**changes: object) -> TwoTowerConfig:
    values: dict[str, object] = {
        "num_users": NUM_USERS,
        "num_items": NUM_ITEMS,
        "embedding_dim": 8,
        "tower_dims": (16, 8),
        "user_categorical": {"gender": 3},
        "user_dense": {"age": 1},
        "item_categorical": {"category": 4},
        "item_dense": {"genres": 5},
        "item_vector_dim": 12,
    }
    values.update(changes)
    return TwoTowerConfig(**values)  # type: ignore[arg-type]


def item_features() -> dict[str, torch.Tensor]:
    return {
        "category": torch.arange(NUM_ITEMS) % 4,
        "genres": torch.rand(NUM_ITEMS, 5),
        "item_vector": torch.randn(NUM_ITEMS, 12),
    }


def user_batch(size: int) -> dict[str, torch.Tensor]:
    return {
        "user_id": torch.arange(1, size + 1),
        "gender": torch.arange(size) % 3,
        "age": torch.rand(size),
        "history": torch.randint(1, NUM_ITEMS, (size, 5)),
        "history_len": torch.arange(size) % 6,
    }


def test_two_tower_with_every_feature_kind_produces_normalised_vectors() -> None:
    torch.manual_seed(0)
    model = TwoTower(full_config(negatives="mixed"), item_features=item_features())
    batch = {**user_batch(4), "item_id": torch.tensor([1, 2, 3, 4]), "neg_item_id": torch.randint(1, NUM_ITEMS, (4, 3))}
    out = model(batch)
    assert out["score"].shape == (4,) and out["neg_score"].shape == (4, 3)
    users = model.user_representation(batch)
    items = model.item_representation()
    assert users.shape == (4, 8) and items.shape == (NUM_ITEMS, 8)
    assert torch.allclose(users.norm(dim=-1), torch.ones(4)) and torch.allclose(
        items.norm(dim=-1), torch.ones(NUM_ITEMS)
    )
    assert torch.isfinite(model.loss(batch, out))
    scores = model.score_all(batch)
    assert scores.shape == (4, NUM_ITEMS) and bool(torch.isinf(scores[:, 0]).all())
    signature = model.signature()
    assert {"gender", "age", "history", "history_len", "neg_item_id"} <= set(signature.inputs)
    assert set(signature.feature_names) == {"gender", "age", "category", "genres", "item_vector"}


def test_history_mean_ignores_positions_past_history_len() -> None:
    torch.manual_seed(0)
    model = TwoTower(TwoTowerConfig(NUM_USERS, NUM_ITEMS, embedding_dim=4, use_user_id=False, tower_dims=(4,)))
    short = {"history": torch.tensor([[3, 7, 9]]), "history_len": torch.tensor([1]), "user_id": torch.tensor([1])}
    padded = {**short, "history": torch.tensor([[3, 0, 0]])}
    assert torch.allclose(model.user_representation(short), model.user_representation(padded))
    longer = {**short, "history_len": torch.tensor([2])}
    assert not torch.allclose(model.user_representation(short), model.user_representation(longer))


def test_declared_item_features_must_be_set_before_items_are_embedded() -> None:
    model = TwoTower(full_config())
    with pytest.raises(ValueError, match="set_item_features"):
        model.item_representation()
    with pytest.raises(ValueError, match=r"missing \['item_vector'\]"):
        model.set_item_features({k: v for k, v in item_features().items() if k != "item_vector"})
    with pytest.raises(ValueError, match="'genres' must have shape"):
        model.set_item_features({**item_features(), "genres": torch.rand(NUM_ITEMS, 2)})
    model.set_item_features(item_features())
    assert model.item_representation().shape == (NUM_ITEMS, 8)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="temperature"):
        TwoTowerConfig(5, 5, temperature=0.0)
    with pytest.raises(ValueError, match="'hard'"):
        TwoTowerConfig(5, 5, negatives="hard")  # type: ignore[arg-type]


def test_logq_correction_credits_rare_positives_and_debits_popular_ones() -> None:
    # Two users, each scoring both batch items equally: without correction each row's loss is log 2.
    users = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    items = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    item_ids = torch.tensor([1, 2])
    plain = in_batch_softmax_loss(users, items, item_ids, temperature=1.0, reduction="none")
    assert plain.tolist() == pytest.approx([0.6931, 0.6931], abs=1e-4)
    # Item 1 is rare (q = 0.1), item 2 popular (q = 0.9). Row 0's positive is the rare one: as a negative,
    # the popular item was sampled often, so the correction lowers its logit and row 0's loss falls.
    logq = torch.tensor([0.1, 0.9]).log()
    corrected = in_batch_softmax_loss(users, items, item_ids, temperature=1.0, item_logq=logq, reduction="none")
    assert corrected[0] < plain[0] and corrected[1] > plain[1]
    # By hand: row 0 logits (0 - log .1, 0 - log .9) -> loss = log(1 + .1/.9).
    assert corrected[0].item() == pytest.approx(torch.log(torch.tensor(1 + 0.1 / 0.9)).item(), abs=1e-5)


def test_repeated_batch_items_are_not_counted_as_negatives() -> None:
    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = in_batch_softmax_loss(vectors, vectors, torch.tensor([5, 5]), temperature=1.0, reduction="none")
    assert loss.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_popularity_given_at_construction_drives_the_correction_unless_the_batch_overrides_it() -> None:
    torch.manual_seed(0)
    config = TwoTowerConfig(NUM_USERS, NUM_ITEMS, embedding_dim=4, tower_dims=(4,), use_history=False)
    popularity = torch.arange(NUM_ITEMS) ** 2
    plain, weighted = TwoTower(config), TwoTower(config, item_popularity=popularity)
    weighted.load_state_dict({**plain.state_dict(), "item_logq": weighted.item_logq})
    batch = {"user_id": torch.tensor([1, 2, 3]), "item_id": torch.tensor([1, 10, 30])}
    assert plain.loss(batch, plain(batch)).item() != pytest.approx(weighted.loss(batch, weighted(batch)).item())
    uniform = {**batch, "item_logq": torch.zeros(3)}
    assert weighted.loss(uniform, weighted(uniform)).item() == pytest.approx(plain.loss(batch, plain(batch)).item())


def test_sampled_negatives_that_hit_the_positive_are_masked() -> None:
    torch.manual_seed(0)
    model = TwoTower(
        TwoTowerConfig(NUM_USERS, NUM_ITEMS, embedding_dim=4, tower_dims=(4,), negatives="sampled", use_history=False)
    )
    batch = {"user_id": torch.tensor([1]), "item_id": torch.tensor([3]), "neg_item_id": torch.tensor([[3, 3]])}
    assert model.loss(batch, model(batch)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="neg_item_id"):
        unsampled = {"user_id": torch.tensor([1]), "item_id": torch.tensor([3])}
        model.loss(unsampled, model(unsampled))


def test_state_dict_carries_item_features_and_popularity() -> None:
    torch.manual_seed(0)
    model = TwoTower(full_config(), item_features=item_features(), item_popularity=torch.arange(NUM_ITEMS))
    restored = TwoTower(full_config())
    restored.load_state_dict(model.state_dict())
    model.eval(), restored.eval()
    assert torch.equal(restored.item_representation(), model.item_representation())
    assert torch.equal(restored.item_logq, model.item_logq)


@pytest.mark.parametrize("negatives", ["in_batch", "sampled", "mixed"])
def test_two_tower_overfits_a_planted_pattern(negatives: str) -> None:
    torch.manual_seed(0)
    data = planted_interactions()
    config = TwoTowerConfig(
        NUM_USERS,
        NUM_ITEMS,
        embedding_dim=16,
        tower_dims=(32, 16),
        use_history=False,
        temperature=0.1,
        negatives=negatives,  # type: ignore[arg-type]
    )
    model = TwoTower(config, item_popularity=torch.bincount(data.item_ids, minlength=NUM_ITEMS))
    losses = train(model, data, steps=120, lr=0.01)
    # In-batch rows share a user with its 5 other positives, so the in-batch loss cannot go near zero.
    assert losses[-1] < 0.7 * losses[0]
    assert pairwise_accuracy(model, data) >= 0.9
