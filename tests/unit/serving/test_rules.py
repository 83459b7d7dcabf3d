"""Business rules over candidate matrices: each drops or rescores exactly what it should and names the rows it
changed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recplane.serving.rules import (
    Boost,
    Candidates,
    ItemRules,
    RuleLog,
    boost,
    cap_per_category,
    compile_rules,
    dedupe,
    exclude_items,
    exclude_per_row,
    exclude_seen,
    item_categories,
    top_k,
)
from recplane.serving.spec import RulesSpec
from recplane.training.bundle import IdIndex, UserInteractions


def candidates(ids: list[list[int]], scores: list[list[float]] | None = None) -> Candidates:
    array = np.array(ids, dtype=np.int64)
    default = -np.arange(array.size, dtype=np.float32).reshape(array.shape)  # best first, as given
    values = np.array(scores, dtype=np.float32) if scores else default
    return Candidates.of(array, values)


def kept(result: Candidates) -> list[list[int]]:
    return [[item for item in row if item >= 0] for row in result.best_first().ids.tolist()]


def test_exclude_seen_drops_each_users_own_training_items_only() -> None:
    seen = UserInteractions.build(
        users=np.array([1, 1, 2]), items=np.array([3, 5, 4]), times=None, num_users=4, num_items=8
    )
    result, changed = exclude_seen(candidates([[3, 4, 5, 6], [3, 4, 5, 6], [3, 4, 5, 6]]), np.array([1, 2, 3]), seen)
    assert kept(result) == [[4, 6], [3, 5, 6], [3, 4, 5, 6]]
    assert changed.tolist() == [True, True, False]


def test_blocked_items_are_dropped_everywhere() -> None:
    blocked = np.zeros(10, dtype=bool)
    blocked[[2, 7]] = True
    result, changed = exclude_items(candidates([[1, 2, 3], [4, 5, 6], [7, -1, -1]]), blocked)
    assert kept(result) == [[1, 3], [4, 5, 6], []]
    assert changed.tolist() == [True, False, True]


def test_request_exclusions_apply_to_their_own_row_only() -> None:
    result, changed = exclude_per_row(candidates([[1, 2, 3], [1, 2, 3]]), [np.array([2]), np.array([], np.int64)])
    assert kept(result) == [[1, 3], [1, 2, 3]]
    assert changed.tolist() == [True, False]


def test_boost_rescales_and_shifts_the_listed_items_and_the_order_follows() -> None:
    items = np.zeros(10, dtype=bool)
    items[3] = True
    base = candidates([[1, 2, 3]], [[1.0, 0.9, 0.5]])
    result, changed = boost(base, Boost(items, multiply=2.0, add=0.2))
    assert kept(result) == [[3, 1, 2]]
    np.testing.assert_allclose(result.best_first().scores[0], [1.2, 1.0, 0.9], rtol=1e-6)
    np.testing.assert_allclose(result.best_first().retrieval_scores[0], [0.5, 1.0, 0.9], rtol=1e-6)
    assert changed.tolist() == [True]


def test_dedupe_keeps_the_best_scored_copy_of_each_item() -> None:
    result, changed = dedupe(candidates([[4, 5, 4, 6], [1, 2, 3, -1]], [[0.1, 0.5, 0.9, 0.2], [3, 2, 1, 0]]))
    assert kept(result) == [[4, 5, 6], [1, 2, 3]]
    assert result.best_first().scores[0, 0] == np.float32(0.9)
    assert changed.tolist() == [True, False]


def test_category_cap_keeps_the_best_items_of_each_category_and_leaves_unknown_ones_alone() -> None:
    categories = np.array([0, 1, 1, 1, 2, 2, 0, 0])  # items 6 and 7 have no category
    scores = [[8, 7, 6, 5, 4, 3, 2]]
    result, changed = cap_per_category(candidates([[1, 2, 3, 4, 5, 6, 7]], scores), categories, 2)
    assert kept(result) == [[1, 2, 4, 5, 6, 7]]
    assert changed.tolist() == [True]
    same, unchanged = cap_per_category(candidates([[1, 4]]), categories, 2)
    assert kept(same) == [[1, 4]] and unchanged.tolist() == [False]


def test_top_k_takes_the_best_k_per_row() -> None:
    result = top_k(candidates([[1, 2, 3], [4, -1, -1]], [[0.1, 0.3, 0.2], [1.0, 0, 0]]), 2)
    assert result.ids.tolist() == [[2, 3], [4, -1]]


def test_item_rules_run_in_order_and_log_the_rules_that_changed_each_row() -> None:
    boosted = np.zeros(10, dtype=bool)
    boosted[5] = True
    blocked = np.zeros(10, dtype=bool)
    blocked[1] = True
    rules = ItemRules(blocked=blocked, boosts=(Boost(boosted, multiply=10.0),), dedupe=True)
    log = RuleLog(3)
    rows = np.array([0, 2])
    base = candidates([[1, 2, 5], [2, 3, 4]], [[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    result = rules.reorder(rules.exclusions(base, log, rows), log, rows)
    assert kept(result) == [[5, 2], [2, 3, 4]]
    assert log.applied(0) == ["block", "boost"]
    assert log.applied(1) == [] and log.applied(2) == []


def test_rules_compile_from_a_spec_with_raw_item_ids_and_category_names() -> None:
    items = IdIndex(pa.array([10, 20, 30, 40], pa.int64()))  # model ids 1..4
    categories, names = item_categories(items, pa.array([40, 10, 20, 99]), pa.array(["toys", "books", None, "x"]))
    assert names == ["books", "toys", "x"] and categories.tolist() == [0, 1, 0, 0, 2]
    spec = RulesSpec(
        items="shop_items",
        block_items=[30, 404],
        block_categories=["books"],
        boosts=[{"category": "toys", "multiply": 2.0}],
        max_per_category=1,
    )
    rules = compile_rules(spec, items, categories, names)
    assert rules.blocked is not None and np.flatnonzero(rules.blocked).tolist() == [1, 3]
    assert np.flatnonzero(rules.boosts[0].items).tolist() == [4] and rules.boosts[0].multiply == 2.0
    assert rules.max_per_category == 1 and rules.blocked_count == 2
