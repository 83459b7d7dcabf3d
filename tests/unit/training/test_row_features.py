"""RowFeatureEncoder: fitted on the training split, the same encoding for tables and online value mappings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recplane.errors import InvalidInput
from recplane.training.row_features import RowFeatureEncoder


def _table() -> pa.Table:
    return pa.table(
        {
            "city": ["paris", "oslo", None, "paris"],
            "spend": [1.0, None, 3.0, 4.0],
            "visits": pa.array([10, 20, 30, 40], pa.int32()),
            "hour": pa.array([1, 2, 1, 2], pa.int16()),
            "premium": [True, False, None, True],
            "recent": [[3, 1, 2], [], None, [4]],
            "tier": pa.array(["a", "b", "a", "a"]).dictionary_encode(),
        }
    )


def _fit(**options: int) -> RowFeatureEncoder:
    return RowFeatureEncoder.fit(_table(), ["city", "spend", "visits", "hour", "premium", "recent", "tier"], **options)


def test_types_decide_the_encoding_and_small_integer_columns_are_categorical() -> None:
    kinds = {feature.name: feature.kind for feature in _fit(max_int_categories=3).features}
    assert kinds == {
        "city": "categorical",
        "spend": "dense",
        "visits": "dense",  # 4 distinct values > 3
        "hour": "categorical",
        "premium": "categorical",
        "recent": "bag",
        "tier": "categorical",
    }


def test_categorical_ids_follow_the_sorted_vocabulary_and_null_or_unseen_is_zero() -> None:
    encoder = _fit()
    encoded = encoder.encode(_table())
    assert encoded["city"].tolist() == [2, 1, 0, 2]  # oslo=1, paris=2
    assert encoded["premium"].tolist() == [2, 1, 0, 2]  # False=1, True=2
    assert encoded["tier"].tolist() == [1, 2, 1, 1]
    assert encoder.encode({"city": ["rome", "oslo", None], **_others(3)})["city"].tolist() == [0, 1, 0]
    assert encoded["city"].dtype == np.int64


def test_dense_values_are_standardised_with_training_statistics_and_missing_is_flagged() -> None:
    encoded = _fit(max_int_categories=3).encode(_table())
    known = np.array([1.0, 3.0, 4.0])
    mean, std = known.mean(), known.std()
    spend = encoded["spend"]
    assert spend.shape == (4, 2) and spend.dtype == np.float32
    np.testing.assert_allclose(spend[:, 0], [(1 - mean) / std, 0.0, (3 - mean) / std, (4 - mean) / std], rtol=1e-6)
    assert spend[:, 1].tolist() == [0.0, 1.0, 0.0, 0.0]
    visits = encoded["visits"]  # never missing in training: one value per row, no flag
    assert visits.shape == (4,)
    np.testing.assert_allclose(visits.mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(visits.std(), 1.0, rtol=1e-5)


def test_bags_are_padded_to_the_training_width_and_keep_the_newest_entries() -> None:
    encoder = _fit()
    encoded = encoder.encode(_table())
    assert encoded["recent"].tolist() == [[3, 1, 2], [0, 0, 0], [0, 0, 0], [4, 0, 0]]
    assert encoded["recent_len"].tolist() == [3, 0, 0, 1]
    longer = encoder.encode({"recent": [[9, 1, 2, 3, 4], [2, None]], **_others(2, without="recent")})
    assert longer["recent"].tolist() == [[2, 3, 4], [2, 0, 0]]  # 9 is dropped (oldest); None is unknown
    assert longer["recent_len"].tolist() == [3, 2]


def test_a_mapping_of_online_values_encodes_like_the_table() -> None:
    encoder = _fit(max_int_categories=3)
    table = _table()
    mapping = {name: table.column(name).to_pylist() for name in encoder.columns}
    from_table, from_mapping = encoder.encode(table), encoder.encode(mapping)
    assert from_table.keys() == from_mapping.keys() == set(encoder.input_names)
    for name in from_table:
        np.testing.assert_array_equal(from_table[name], from_mapping[name])
    numpy_input = {**mapping, "spend": np.array([1.0, np.nan, 3.0, 4.0])}
    np.testing.assert_array_equal(encoder.encode(numpy_input)["spend"], from_table["spend"])


def test_json_round_trip_gives_the_same_encoder_and_encoding() -> None:
    encoder = _fit(max_int_categories=3)
    again = RowFeatureEncoder.from_json(encoder.to_json())
    assert again == encoder
    assert again.to_json() == encoder.to_json()
    for name, values in encoder.encode(_table()).items():
        np.testing.assert_array_equal(again.encode(_table())[name], values)


def test_fitting_does_not_depend_on_row_order() -> None:
    table = _table()
    reversed_rows = table.take(pa.array([3, 2, 1, 0]))
    columns = ["city", "spend", "visits", "premium", "recent"]
    assert RowFeatureEncoder.fit(table, columns) == RowFeatureEncoder.fit(reversed_rows, columns)


def test_bad_inputs_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidInput, match="not in the interaction table"):
        RowFeatureEncoder.fit(_table(), ["nope"])
    with pytest.raises(InvalidInput, match="more than once"):
        RowFeatureEncoder.fit(_table(), ["city", "city"])
    with pytest.raises(InvalidInput, match="not a row feature type"):
        RowFeatureEncoder.fit(pa.table({"ts": pa.array([0], pa.timestamp("s"))}), ["ts"])
    encoder = RowFeatureEncoder.fit(_table(), ["visits", "spend"], max_int_categories=3)
    with pytest.raises(InvalidInput, match=r"lacks column\(s\) \['spend'\]"):
        encoder.encode({"visits": [1]})
    with pytest.raises(InvalidInput, match="one value per row"):
        encoder.encode({"visits": [1, 2], "spend": [1.0]})
    with pytest.raises(InvalidInput, match="cannot be read as double"):
        encoder.encode({"visits": [1], "spend": ["lots"]})
    with pytest.raises(InvalidInput, match="Not a row feature encoder"):
        RowFeatureEncoder.from_json('{"format": 99}')


def _others(rows: int, *, without: str = "city") -> dict[str, list[object]]:
    """Null values for every fitted column but one (nulls encode as unknown / missing)."""
    names = ["city", "spend", "visits", "hour", "premium", "recent", "tier"]
    return {name: [None] * rows for name in names if name != without}


def _context_clicks(rows: int = 4000, seed: int = 0) -> pa.Table:
    """Clicks driven mostly by the request's context (a dense score and a slot), which ids cannot know."""
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 100, rows), rng.integers(0, 50, rows)
    score, slot = rng.normal(size=rows), rng.integers(0, 4, rows)
    logit = 2.0 * score + np.where(slot == 0, 1.5, -0.5) + 0.3 * (users % 2)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pa.table({"user_id": users, "item_id": items, "label": label, "score": score, "slot": slot})


def test_deepfm_learns_from_row_features_that_carry_the_signal() -> None:
    from recplane.training import TrainConfig, train

    table = _context_clicks()
    settings = {"model": "deepfm", "epochs": 4, "batch_size": 256, "lr": 0.01, "seed": 7, "patience": None}
    without = train(table, TrainConfig(**settings))
    with_rows = train(table, TrainConfig(**settings, row_feature_columns=["score", "slot"]))
    assert without.row_encoder is None
    assert with_rows.row_encoder is not None and with_rows.row_encoder.columns == ["score", "slot"]
    assert {f.name: f.kind for f in with_rows.row_encoder.features} == {"score": "dense", "slot": "categorical"}
    assert with_rows.example_batch is not None and {"score", "slot"} <= set(with_rows.example_batch)
    assert with_rows.test_metrics["auc"] > without.test_metrics["auc"] + 0.15
    assert with_rows.test_metrics["auc"] > 0.8


def test_row_features_need_a_ranking_model_and_may_not_be_the_label() -> None:
    from recplane.training import TrainConfig, train

    with pytest.raises(InvalidInput, match="need a ranking model"):
        TrainConfig(model="mf", row_feature_columns=["score"])
    with pytest.raises(InvalidInput, match="hold the label"):
        train(_context_clicks(200), TrainConfig(model="deepfm", epochs=1, row_feature_columns=["label"]))
    with pytest.raises(InvalidInput, match="clashes with a batch key"):
        table = _context_clicks(200).append_column("history", pa.array(np.zeros(200)))
        train(table, TrainConfig(model="deepfm", epochs=1, row_feature_columns=["history"]))
