"""DCN-v2: the cross-layer formula, every structure/mixture combination, the L2 term, and a planted like-set."""

from __future__ import annotations

import pytest
import torch
from tests.fixtures.ranking import ITEMS, USERS, fit, liked_pairs
from torch import nn

from recplane.models.dcn import CrossNetworkV2, DCNv2, DCNv2Config
from recplane.models.features import DenseField, SparseField
from recplane.training.metrics import auc


def _config(**overrides: object) -> DCNv2Config:
    fields = (SparseField("user_id", USERS), SparseField("item_id", ITEMS))
    settings: dict[str, object] = {"embedding_size": 8, "mlp_hidden_size": (32, 32), "low_rank": 4}
    settings.update(overrides)
    return DCNv2Config(sparse_fields=fields, **settings)  # type: ignore[arg-type]


def test_one_cross_layer_is_x0_times_linear_of_x_plus_x() -> None:
    torch.manual_seed(0)
    cross = CrossNetworkV2(dim=5, num_layers=1)
    x0 = torch.randn(3, 5)
    layer = cross.layers[0]
    assert isinstance(layer, nn.Linear)
    expected = x0 * (x0 @ layer.weight.T + layer.bias) + x0
    torch.testing.assert_close(cross(x0), expected)


@pytest.mark.parametrize("mixed", [False, True], ids=["full-rank", "low-rank-mix"])
@pytest.mark.parametrize("structure", ["parallel", "stacked"])
def test_every_structure_gives_one_logit_per_row(mixed: bool, structure: str) -> None:
    torch.manual_seed(0)
    model = DCNv2(_config(mixed=mixed, structure=structure, dense_fields=(DenseField("age"),)))
    batch = {**liked_pairs(), "age": torch.rand(USERS * ITEMS)}
    out = model(batch)
    assert out.keys() == {"label"} and out["label"].shape == (USERS * ITEMS,)
    model.loss(batch, out).backward()
    assert all(p.grad is not None for p in model.cross.parameters())
    assert model.signature().feature_names == ("user_id", "item_id", "age")


def test_reg_weight_adds_the_squared_norm_of_the_cross_weights() -> None:
    torch.manual_seed(0)
    model = DCNv2(_config(reg_weight=0.5)).eval()
    batch = liked_pairs()
    out = model(batch)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(out["label"], batch["label"])
    penalty = sum(w.detach().pow(2).sum().item() for w in model.cross.weights())
    assert model.loss(batch, out).item() == pytest.approx(plain.item() + 0.5 * penalty, rel=1e-5)


def test_unknown_structure_is_refused() -> None:
    with pytest.raises(ValueError, match="structure 'serial'"):
        _config(structure="serial")


@pytest.mark.parametrize("mixed", [False, True], ids=["full-rank", "low-rank-mix"])
def test_learns_a_planted_like_set(mixed: bool) -> None:
    torch.manual_seed(0)
    model = DCNv2(_config(mixed=mixed, dropout_prob=0.0))
    batch = liked_pairs()
    losses = fit(model, batch, steps=80, lr=0.01)
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    assert auc(batch["label"], model.predict(batch)["label"]) >= 0.9
