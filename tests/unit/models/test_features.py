"""The feature-input layer of the ranking models: shapes, bag pooling, id checks and the shared label loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from recplane.models.features import (
    MLP,
    DenseField,
    FeatureLayer,
    SparseField,
    lookup_all,
    weighted_bce,
)


def _layer() -> FeatureLayer:
    torch.manual_seed(0)
    return FeatureLayer(
        [SparseField("user_id", 5), SparseField("genres", 7, multi_valued=True), SparseField("city", 3, dim=2)],
        [DenseField("age"), DenseField("text_vec", 4)],
        default_dim=6,
    )


def _batch() -> dict[str, Tensor]:
    return {
        "user_id": torch.tensor([0, 4, 2]),
        "genres": torch.tensor([[1, 2, 0], [3, 0, 0], [6, 5, 4]]),
        "genres_len": torch.tensor([2, 1, 3]),
        "city": torch.tensor([2, 0, 1]),
        "age": torch.tensor([0.1, 0.5, 0.9]),
        "text_vec": torch.rand(3, 4),
    }


def test_fields_embed_to_declared_dims_and_flatten_with_dense_values() -> None:
    layer = _layer()
    inputs = layer(_batch())
    assert [tuple(t.shape) for t in inputs.sparse] == [(3, 6), (3, 6), (3, 2)]
    assert inputs.dense.shape == (3, 5)
    assert inputs.flat().shape == (3, layer.output_dim) == (3, 6 + 6 + 2 + 5)
    assert layer.feature_names == ("user_id", "genres", "city", "age", "text_vec")
    assert layer.input_spec()["genres"] == "int64[B, L]" and layer.input_spec()["genres_len"] == "int64[B]"


def test_stacked_fields_are_b_f_d_and_need_one_dim() -> None:
    layer = FeatureLayer([SparseField("a", 4), SparseField("b", 4)], default_dim=3)
    assert layer({"a": torch.tensor([1, 2]), "b": torch.tensor([0, 3])}).stacked().shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r"different dims \[2, 6\]"):
        _layer()(_batch()).stacked()


def test_bags_are_mean_pooled_over_their_real_entries_only() -> None:
    layer = _layer()
    table = layer.tables[1]
    assert isinstance(table, nn.Embedding)
    pooled = layer(_batch()).sparse[1]
    expected = torch.stack([table.weight[[1, 2]].mean(0), table.weight[3], table.weight[[6, 5, 4]].mean(0)])
    torch.testing.assert_close(pooled, expected)


def test_bag_padding_may_hold_any_value_and_empty_bags_pool_to_zero() -> None:
    layer = _layer()
    batch = _batch()
    garbage = dict(batch, genres=torch.tensor([[1, 2, -1], [3, 99, 12345], [6, 5, 4]]))
    torch.testing.assert_close(layer(garbage).sparse[1], layer(batch).sparse[1])
    empty = dict(batch, genres_len=torch.tensor([0, 1, 3]))
    assert torch.equal(layer(empty).sparse[1][0], torch.zeros(6))


def test_missing_key_names_the_field_and_lists_the_batch() -> None:
    batch = _batch()
    del batch["genres_len"]
    with pytest.raises(ValueError, match=r"no 'genres_len' \(bag sizes of 'genres'\).*holds \["):
        _layer()(batch)


def test_out_of_range_id_is_reported_with_the_field_and_range() -> None:
    batch = dict(_batch(), user_id=torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match=r"'user_id' holds id 5, outside \[0, 5\)"):
        _layer()(batch)


def test_float_ids_are_a_type_error() -> None:
    batch = dict(_batch(), city=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="'city' must hold integer ids"):
        _layer()(batch)


def test_dense_field_shape_is_checked() -> None:
    batch = dict(_batch(), text_vec=torch.rand(3, 3))
    with pytest.raises(ValueError, match=r"'text_vec' must be \[B\] or \[B, 4\]"):
        _layer()(batch)


def test_colliding_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"collide: \['tags_len'\]"):
        FeatureLayer([SparseField("tags", 3, multi_valued=True)], [DenseField("tags_len")])


class _ModuloTable(nn.Module):
    """A stand-in hashed table: any id is accepted and folded into the table."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.inner = nn.Embedding(num, dim)

    def forward(self, ids: Tensor) -> Tensor:
        return self.inner(ids.remainder(self.inner.num_embeddings))


def test_embedding_factory_builds_every_table_and_replaces_the_id_check() -> None:
    built: list[tuple[int, int]] = []

    def factory(num: int, dim: int) -> nn.Module:
        built.append((num, dim))
        return _ModuloTable(num, dim)

    layer = FeatureLayer([SparseField("a", 9), SparseField("b", 4, dim=2)], default_dim=5, embedding_factory=factory)
    assert built == [(9, 5), (4, 2)]
    out = layer({"a": torch.tensor([10**9, 3]), "b": torch.tensor([-7, 1])})  # the table decides what it accepts
    assert [tuple(t.shape) for t in out.sparse] == [(2, 5), (2, 2)]
    assert lookup_all(layer.tables[0], 9).shape == (9, 5)


def test_weighted_bce_leaves_out_nan_labels_and_weights_tasks() -> None:
    logits = {"click": torch.tensor([0.0, 2.0]), "rating": torch.tensor([1.0, -1.0])}
    batch = {"click": torch.tensor([1.0, 0.0]), "rating": torch.tensor([1.0, math.nan])}
    click = (math.log(2) + (2 + math.log1p(math.exp(-2)))) / 2
    rating = math.log1p(math.exp(-1.0))
    loss = weighted_bce(logits, batch, ("click", "rating"), (1.0, 0.5))
    assert float(loss) == pytest.approx(click + 0.5 * rating, rel=1e-5)
    unlabelled = {"click": batch["click"], "rating": torch.full((2,), math.nan)}
    assert float(weighted_bce(logits, unlabelled, ("click", "rating"))) == pytest.approx(click, rel=1e-5)


def test_mlp_stacks_hidden_layers_and_reports_its_width() -> None:
    mlp = MLP(8, (16, 4), dropout=0.1, batch_norm=True)
    assert mlp.out_dim == 4 and mlp(torch.rand(5, 8)).shape == (5, 4)
    assert MLP(8, ()).out_dim == 8


def test_an_mlp_without_hidden_layers_passes_its_input_through_in_training_too() -> None:
    inputs = torch.rand(5, 8)
    assert torch.equal(MLP(8, ()).train()(inputs), inputs)
