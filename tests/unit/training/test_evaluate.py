"""The full-sort driver: hand-computed metrics, exclusion rules, block-size invariance, bounded blocks, segments."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recplane.errors import InvalidInput
from recplane.training.evaluate import Interactions, ScoreFn, evaluate_full_sort
from recplane.training.metrics import RANKING_METRICS, ranking_metrics

LOG2_3 = math.log2(3)

# Three users, six items. User 2 scores every item the same (ties go to the lower item index).
SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    ]
)
TRAIN = Interactions(np.array([0, 1, 1, 2]), np.array([0, 5, 4, 1]))
TEST = Interactions(np.array([0, 1, 1, 2, 2]), np.array([2, 3, 0, 0, 3]))


def from_matrix(matrix: torch.Tensor) -> ScoreFn:
    return lambda users: matrix[users]


class TestHandComputed:
    # With training items masked the rankings are
    #   user 0: 1, 2, 3, 4, 5        (test item 2 at rank 2)
    #   user 1: 3, 2, 1, 0           (test items 3 and 0 at ranks 1 and 4)
    #   user 2: 0, 2, 3, 4, 5        (test items 0 and 3 at ranks 1 and 3)
    RESULT = evaluate_full_sort(
        from_matrix(SCORES),
        TEST,
        num_items=6,
        exclude=[TRAIN],
        train=TRAIN,
        ks=(1, 3),
        metrics=(*RANKING_METRICS, "gauc"),
        cold_threshold=2,
    )

    def test_ranking_metrics(self) -> None:
        m = self.RESULT.metrics
        assert m["recall@1"] == pytest.approx((0 + 1 / 2 + 1 / 2) / 3)
        assert m["recall@3"] == pytest.approx((1 + 1 / 2 + 1) / 3)
        assert m["mrr@3"] == pytest.approx((1 / 2 + 1 + 1) / 3)
        assert m["hit@1"] == pytest.approx(2 / 3)
        assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)
        # NDCG@3: user 0 (1/log2 3) / 1; user 1 1 / (1 + 1/log2 3); user 2 (1 + 1/2) / (1 + 1/log2 3).
        ideal_two = 1 + 1 / LOG2_3
        assert m["ndcg@3"] == pytest.approx((1 / LOG2_3 + 1 / ideal_two + 1.5 / ideal_two) / 3)
        # MAP@3: user 0 (1/2)/1; user 1 (1/1)/2; user 2 (1 + 2/3)/2.
        assert m["map@3"] == pytest.approx((0.5 + 0.5 + 5 / 6) / 3)

    def test_gauc_weights_users_by_their_positives(self) -> None:
        # User 0: 0.7 beats 3 of 4 ranked negatives (0.75, weight 1); user 1: 0.4 beats both negatives and
        # 0.1 none (0.5, weight 2); user 2: all tied (0.5, weight 2). (0.75 + 1 + 1) / 5.
        assert self.RESULT.metrics["gauc"] == pytest.approx(0.55)

    def test_beyond_accuracy(self) -> None:
        m = self.RESULT.metrics
        # Top-1 items 1, 3, 0 -> 3 of 6; top-3 items {0, 1, 2, 3} -> 4 of 6.
        assert m["itemcoverage@1"] == pytest.approx(0.5)
        assert m["itemcoverage@3"] == pytest.approx(4 / 6)
        # Training counts per item: 1, 1, 0, 0, 1, 1. Top-1 popularity: 1, 0, 1.
        assert m["averagepopularity@1"] == pytest.approx(2 / 3)
        # Test items: user 0 item 2 (0); user 1 items 3, 0 (0, 1); user 2 items 0, 3 (1, 0).
        assert m["test_averagepopularity"] == pytest.approx((0 + 0.5 + 0.5) / 3)
        # Self-information of the top-1 items: -log2(1/4), -log2(1/4) (unseen counts once), -log2(1/4).
        assert m["novelty@1"] == pytest.approx(2.0)

    def test_segments_split_users_by_training_interactions(self) -> None:
        # Training interactions: user 0 one, user 1 two, user 2 one; threshold 2 -> users 0 and 2 are cold.
        assert self.RESULT.num_users == {"all": 3, "cold_users": 2, "warm_users": 1, "cold_items": 3}
        assert self.RESULT.segments["cold_users"]["recall@1"] == pytest.approx((0 + 1 / 2) / 2)
        assert self.RESULT.segments["warm_users"]["recall@1"] == pytest.approx(1 / 2)
        # Every item has fewer than 2 training interactions: the cold-item segment is everyone, warm is empty.
        assert self.RESULT.segments["cold_items"]["recall@3"] == pytest.approx(self.RESULT.metrics["recall@3"])
        assert "warm_items" not in self.RESULT.segments


class TestExclusion:
    def test_excluding_training_items_changes_the_ranking(self) -> None:
        plain = evaluate_full_sort(from_matrix(SCORES), TEST, num_items=6, ks=(1,))
        masked = evaluate_full_sort(from_matrix(SCORES), TEST, num_items=6, exclude=[TRAIN], ks=(1,))
        # Unmasked, user 0's top item is 0 (a training item) and user 1's is 5: only user 2 hits.
        assert plain.metrics["hit@1"] == pytest.approx(1 / 3)
        assert masked.metrics["hit@1"] == pytest.approx(2 / 3)

    def test_valid_items_are_masked_too_when_testing(self) -> None:
        valid = Interactions(np.array([0]), np.array([1]))
        result = evaluate_full_sort(from_matrix(SCORES), TEST, num_items=6, exclude=[TRAIN, valid], ks=(1,))
        # User 0 loses items 0 and 1: its test item 2 is now first.
        assert result.metrics["hit@1"] == pytest.approx(1.0)

    def test_a_test_item_also_seen_before_stays_ranked(self) -> None:
        seen = Interactions(np.array([0, 0]), np.array([0, 2]))
        result = evaluate_full_sort(from_matrix(SCORES), TEST, num_items=6, exclude=[seen], ks=(2,))
        # Item 2 is user 0's test positive, so only item 0 is masked: user 0 ranks 1, 2 -> a hit at 2.
        # User 1 (nothing masked) ranks 5, 4 -> no hit; user 2 ranks 0, 1 -> a hit. Masking item 2 would
        # have left user 0 with 1, 3 and hit@2 = 1/3.
        assert result.metrics["hit@2"] == pytest.approx(2 / 3)


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, Interactions, Interactions]:
    num_users = draw(st.integers(1, 12))
    num_items = draw(st.integers(3, 15))
    seed = draw(st.integers(0, 1000))
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (num_users, num_items), generator=generator).float()
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, [num_users, num_items], size=(draw(st.integers(1, 40)), 2))
    split = rng.random(len(pairs)) < 0.3
    if not split.any():
        split[0] = True
    test = Interactions(pairs[split, 0], pairs[split, 1])
    train = Interactions(pairs[~split, 0], pairs[~split, 1])
    return scores, test, train


@settings(max_examples=40, deadline=None)
@given(problem=problems(), batch=st.integers(1, 5))
def test_blocks_of_any_size_give_the_same_metrics(
    problem: tuple[torch.Tensor, Interactions, Interactions], batch: int
) -> None:
    scores, test, train = problem
    ks, metrics = (1, 3), (*RANKING_METRICS, "gauc")
    whole = evaluate_full_sort(
        from_matrix(scores), test, num_items=scores.shape[1], exclude=[train], train=train, ks=ks, metrics=metrics
    )
    blocked = evaluate_full_sort(
        from_matrix(scores),
        test,
        num_items=scores.shape[1],
        exclude=[train],
        train=train,
        ks=ks,
        metrics=metrics,
        batch_users=batch,
    )
    assert blocked.metrics == pytest.approx(whole.metrics)
    assert blocked.num_users == whole.num_users
    assert blocked.segments.keys() == whole.segments.keys()
    for name, values in whole.segments.items():
        assert blocked.segments[name] == pytest.approx(values)


@settings(max_examples=40, deadline=None)
@given(problem=problems())
def test_the_driver_agrees_with_metrics_on_the_dense_matrix(
    problem: tuple[torch.Tensor, Interactions, Interactions],
) -> None:
    scores, test, train = problem
    num_users, num_items = scores.shape
    relevant = torch.zeros(num_users, num_items, dtype=torch.bool)
    relevant[test.user_ids, test.item_ids] = True
    seen = torch.zeros_like(relevant)
    seen[train.user_ids, train.item_ids] = True
    expected = ranking_metrics(scores, relevant, ks=(1, 3), exclude=seen)
    got = evaluate_full_sort(from_matrix(scores), test, num_items=num_items, exclude=[train], ks=(1, 3), batch_users=2)
    assert {name: got.metrics[name] for name in expected} == pytest.approx(expected)


def test_the_cold_item_segment_equals_evaluating_only_cold_test_items() -> None:
    rng = np.random.default_rng(7)
    scores = torch.rand(30, 40, generator=torch.Generator().manual_seed(7))
    train = Interactions(rng.integers(0, 30, 300), (rng.zipf(1.6, 300) - 1) % 40)
    test = Interactions(rng.integers(0, 30, 60), rng.integers(0, 40, 60))
    result = evaluate_full_sort(from_matrix(scores), test, num_items=40, exclude=[train], train=train, ks=(5,))
    counts = np.bincount(train.item_ids, minlength=40)
    for segment, keep in (("cold_items", counts < 5), ("warm_items", counts >= 5)):
        subset = keep[test.item_ids]
        alone = evaluate_full_sort(
            from_matrix(scores),
            Interactions(test.user_ids[subset], test.item_ids[subset]),
            num_items=40,
            exclude=[train],
            ks=(5,),
        )
        for name in ("recall@5", "ndcg@5", "mrr@5", "map@5"):
            assert result.segments[segment][name] == pytest.approx(alone.metrics[name])
        assert result.num_users[segment] == alone.num_users["all"]


class TestBoundedMemory:
    def test_the_score_function_never_sees_more_than_a_block_of_users(self) -> None:
        num_users, num_items = 50, 100
        matrix = torch.rand(num_users, num_items)
        sizes: list[int] = []

        def scores(users: torch.Tensor) -> torch.Tensor:
            assert users.dtype == torch.int64
            assert len(users) <= 3, f"asked for {len(users)} users at once"
            sizes.append(len(users))
            return matrix[users]

        test = Interactions(np.arange(num_users), np.arange(num_users) % num_items)
        evaluate_full_sort(scores, test, num_items=num_items, max_block_elements=3 * num_items)
        assert sum(sizes) == num_users
        evaluate_full_sort(scores, test, num_items=num_items, batch_users=3)

    def test_each_user_is_scored_once(self) -> None:
        asked: list[int] = []

        def scores(users: torch.Tensor) -> torch.Tensor:
            asked.extend(users.tolist())
            return SCORES[users]

        evaluate_full_sort(scores, TEST, num_items=6, ks=(3,), batch_users=2)
        assert asked == [0, 1, 2]


class TestRefusals:
    def test_a_score_block_of_the_wrong_shape(self) -> None:
        with pytest.raises(InvalidInput, match=r"returned shape \(3, 5\) for 3 users; expected \(3, 6\)"):
            evaluate_full_sort(lambda users: SCORES[users][:, :5], TEST, num_items=6, ks=(1,))

    def test_items_outside_the_catalogue(self) -> None:
        with pytest.raises(InvalidInput, match="item index 9 but num_items is 6"):
            evaluate_full_sort(from_matrix(SCORES), Interactions(np.array([0]), np.array([9])), num_items=6, ks=(1,))

    def test_k_larger_than_the_catalogue(self) -> None:
        with pytest.raises(InvalidInput, match="between 1 and num_items"):
            evaluate_full_sort(from_matrix(SCORES), TEST, num_items=6, ks=(10,))

    def test_unknown_metrics(self) -> None:
        with pytest.raises(InvalidInput, match="Unknown metric"):
            evaluate_full_sort(from_matrix(SCORES), TEST, num_items=6, ks=(1,), metrics=("auc",))

    def test_negative_indices(self) -> None:
        with pytest.raises(InvalidInput, match="non-negative"):
            Interactions(np.array([-1]), np.array([0]))


def test_interactions_read_from_arrow() -> None:
    table = pa.table({"user_id": [0, 1], "item_id": [3, 4], "ts": [1, 2]})
    pairs = Interactions.from_arrow(table)
    assert pairs.user_ids.tolist() == [0, 1] and pairs.item_ids.tolist() == [3, 4]
    result = evaluate_full_sort(from_matrix(SCORES[:2]), pairs, num_items=6, ks=(5,))
    assert result.rounded(2)["num_users"] == {"all": 2}


def test_interactions_with_null_ids_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"\['item_id'\] have null values"):
        Interactions.from_arrow(pa.table({"user_id": [0, 1], "item_id": pa.array([3, None], pa.int64())}))
