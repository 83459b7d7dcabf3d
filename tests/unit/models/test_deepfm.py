"""DeepFM: output shapes, the FM identity, field checks, and that it learns a planted like-set."""

from __future__ import annotations

from itertools import combinations

import pytest
import torch
from tests.fixtures.ranking import ITEMS, USERS, fit, liked_pairs

from recplane.models.deepfm import DeepFM, DeepFMConfig
from recplane.models.features import DenseField, SparseField
from recplane.training.metrics import auc


def _config(**overrides: object) -> DeepFMConfig:
    fields = (SparseField("user_id", USERS), SparseField("item_id", ITEMS))
    return DeepFMConfig(sparse_fields=fields, **overrides)  # type: ignore[arg-type]


def test_forward_gives_one_logit_per_row_and_predict_probabilities() -> None:
    torch.manual_seed(0)
    config = _config(dense_fields=(DenseField("age"), DenseField("text_vec", 3)))
    model = DeepFM(config)
    batch = {**liked_pairs(), "age": torch.rand(USERS * ITEMS), "text_vec": torch.rand(USERS * ITEMS, 3)}
    out = model(batch)
    assert out.keys() == {"label"} and out["label"].shape == (USERS * ITEMS,)
    probs = model.predict(batch)["label"]
    assert ((probs > 0) & (probs < 1)).all()
    signature = model.signature()
    assert signature.tasks == ("label",)
    assert signature.feature_names == ("user_id", "item_id", "age", "text_vec")
    assert {"user_id", "item_id", "age", "text_vec", "label"} == set(signature.inputs)


def test_second_order_term_equals_the_explicit_pairwise_sum() -> None:
    torch.manual_seed(0)
    model = DeepFM(_config(dense_fields=(DenseField("age"),), mlp_hidden_size=(4,))).eval()
    batch = {"user_id": torch.tensor([3]), "item_id": torch.tensor([5]), "age": torch.tensor([0.7])}
    with torch.no_grad():
        inputs = model.features(batch)
        age_field = model.dense_to_field[0](inputs.dense)
        fields = [inputs.sparse[0][0], inputs.sparse[1][0], age_field[0]]
        pairwise = sum(float(a @ b) for a, b in combinations(fields, 2))
        first = float(sum(t.sum() for t in model.first_order(batch).sparse) + model.bias)
        assert model.dense_linear is not None
        first += float(model.dense_linear(inputs.dense))
        stacked = torch.stack(fields).unsqueeze(0)
        deep = float(model.deep_head(model.mlp(stacked.flatten(1))))
        assert float(model(batch)["label"]) == pytest.approx(first + pairwise + deep, abs=1e-5)


def test_sparse_field_with_another_dim_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Sparse fields \['item_id'\] set a dim other than embedding_size 10"):
        DeepFMConfig(sparse_fields=(SparseField("user_id", 3), SparseField("item_id", 3, dim=4)))


def test_learns_a_planted_like_set() -> None:
    torch.manual_seed(0)
    model = DeepFM(_config(dropout_prob=0.0, mlp_hidden_size=(32, 32)))
    batch = liked_pairs()
    losses = fit(model, batch, steps=60, lr=0.02)
    assert losses[-1] < 0.5 * losses[0]
    assert auc(batch["label"], model.predict(batch)["label"]) >= 0.9
