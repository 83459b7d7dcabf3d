"""Default protocols mirror RecBole 1.2.1's defaults per model type, and split tables accordingly."""

from __future__ import annotations

import pyarrow as pa
import pytest

from recplane.errors import InvalidInput
from recplane.training.protocol import default_protocol, split_for_protocol
from recplane.training.splits import leave_one_out_split, random_split


def table() -> pa.Table:
    users = [u % 7 for u in range(140)]
    return pa.table(
        {"user_id": users, "item_id": [i % 11 for i in range(140)], "ts": [(37 * i) % 140 for i in range(140)]}
    )


def test_general_models_use_recboles_overall_defaults() -> None:
    protocol = default_protocol("general")
    assert (protocol.split, protocol.ratios, protocol.ordering, protocol.group_by, protocol.mode) == (
        "RS",
        (0.8, 0.1, 0.1),
        "RO",
        "user",
        "full",
    )
    assert protocol.metrics == ("recall", "mrr", "ndcg", "hit", "precision")
    assert (protocol.topk, protocol.valid_metric, protocol.exclude_seen, protocol.seed) == ((10,), "mrr@10", True, 2020)


def test_sequential_models_leave_the_last_two_out_in_time_order() -> None:
    protocol = default_protocol("sequential")
    assert (protocol.split, protocol.leave_one_out, protocol.ordering, protocol.mode) == (
        "LS",
        "valid_and_test",
        "TO",
        "full",
    )
    assert not protocol.exclude_seen  # repeatable: True
    assert protocol.min_train_per_user == 2


def test_context_models_split_the_whole_table_and_score_labelled_rows() -> None:
    protocol = default_protocol("context")
    assert (protocol.split, protocol.group_by, protocol.mode, protocol.metrics, protocol.valid_metric) == (
        "RS",
        None,
        "labeled",
        ("auc", "logloss"),
        "auc",
    )
    assert protocol.label_threshold is None
    assert default_protocol("context", dataset="ml-100k").label_threshold == ("rating", 4.0)


def test_split_for_protocol_applies_the_protocols_split() -> None:
    data = table()
    general = split_for_protocol(data, default_protocol("general"))
    assert general.test.equals(random_split(data, (0.8, 0.1, 0.1), group_by="user_id", seed=2020).test)
    context = split_for_protocol(data, default_protocol("context"))
    assert context.sizes() == random_split(data, group_by=None).sizes() == (112, 14, 14)
    sequential = split_for_protocol(data, default_protocol("sequential"))
    assert sequential.test.equals(leave_one_out_split(data, min_train=2).test)
    assert sequential.sizes() == (126, 7, 7)


def test_unknown_model_kinds_are_refused() -> None:
    with pytest.raises(InvalidInput, match="Unknown model kind 'ranking'"):
        default_protocol("ranking")  # type: ignore[arg-type]
