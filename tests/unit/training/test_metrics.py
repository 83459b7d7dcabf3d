"""Ranking, CTR and beyond-accuracy metrics: hand-computed values, RecBole's definitions, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recplane.errors import InvalidInput
from recplane.training.metrics import (
    RANKING_METRICS,
    auc,
    average_popularity,
    full_sort_user_auc,
    gauc,
    hit_at_k,
    hits_of,
    item_coverage,
    log_loss,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    popularity_percentiles,
    precision_at_k,
    ranking_metrics,
    ranking_metrics_per_user,
    recall_at_k,
    top_k_items,
)

LOG2_3 = math.log2(3)
LOG2_5 = math.log2(5)


def reference_ranking_metric(name: str, hits: list[bool], num_relevant: int, k: int) -> float:
    """RecBole 1.2.1's per-user definitions (recbole/evaluator/metrics.py), written as plain loops."""
    top = hits[:k]
    found = sum(top)
    if name == "hit":
        return float(found > 0)
    if name == "recall":
        return found / num_relevant
    if name == "precision":
        return found / k
    if name == "mrr":
        return next((1.0 / (rank + 1) for rank, hit in enumerate(top) if hit), 0.0)
    if name == "ndcg":
        dcg = sum(1.0 / math.log2(rank + 2) for rank, hit in enumerate(top) if hit)
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(num_relevant, k)))
        return dcg / ideal
    if name == "map":
        precision_sum = sum(sum(top[: rank + 1]) / (rank + 1) for rank, hit in enumerate(top) if hit)
        return precision_sum / min(num_relevant, k)
    raise AssertionError(name)


def as_hits(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


class TestRankingMetricsByHand:
    # One user, a ranked list of 5 with hits at ranks 1 and 3, and 4 relevant items in all.
    HITS = as_hits([1, 0, 1, 0, 0])
    RELEVANT = torch.tensor([4])

    def test_recall_divides_hits_by_all_relevant_items(self) -> None:
        # @1: 1/4; @3: 2/4; @5: 2/4.
        assert recall_at_k(self.HITS, self.RELEVANT, 1).item() == pytest.approx(0.25)
        assert recall_at_k(self.HITS, self.RELEVANT, 3).item() == pytest.approx(0.5)
        assert recall_at_k(self.HITS, self.RELEVANT, 5).item() == pytest.approx(0.5)

    def test_precision_divides_hits_by_k(self) -> None:
        # @1: 1/1; @3: 2/3; @5: 2/5.
        assert precision_at_k(self.HITS, self.RELEVANT, 1).item() == pytest.approx(1.0)
        assert precision_at_k(self.HITS, self.RELEVANT, 3).item() == pytest.approx(2 / 3)
        assert precision_at_k(self.HITS, self.RELEVANT, 5).item() == pytest.approx(0.4)

    def test_ndcg_uses_binary_gains_and_an_ideal_of_min_relevant_and_k(self) -> None:
        # DCG@3 = 1/log2(2) + 1/log2(4) = 1.5; IDCG@3 (min(4, 3) = 3 hits) = 1 + 1/log2(3) + 1/2.
        assert ndcg_at_k(self.HITS, self.RELEVANT, 3).item() == pytest.approx(1.5 / (1.5 + 1 / LOG2_3))
        # DCG@5 = 1.5; IDCG@5 (min(4, 5) = 4 hits) = 1 + 1/log2(3) + 1/2 + 1/log2(5).
        assert ndcg_at_k(self.HITS, self.RELEVANT, 5).item() == pytest.approx(1.5 / (1.5 + 1 / LOG2_3 + 1 / LOG2_5))

    def test_mrr_is_the_reciprocal_rank_of_the_first_hit_within_k(self) -> None:
        late = as_hits([0, 0, 1, 0, 0])
        # First hit at rank 3: MRR@5 = 1/3, MRR@2 = 0 (no hit in the top 2).
        assert mrr_at_k(late, self.RELEVANT, 5).item() == pytest.approx(1 / 3)
        assert mrr_at_k(late, self.RELEVANT, 2).item() == 0.0

    def test_hit_is_one_when_any_of_the_top_k_is_relevant(self) -> None:
        late = as_hits([0, 0, 1, 0, 0])
        assert hit_at_k(late, self.RELEVANT, 2).item() == 0.0
        assert hit_at_k(late, self.RELEVANT, 3).item() == 1.0

    def test_map_divides_summed_precisions_by_min_relevant_and_k(self) -> None:
        # Precision at the hits: rank 1 -> 1/1, rank 3 -> 2/3. MAP@3 = (1 + 2/3) / min(4, 3) = 5/9.
        assert map_at_k(self.HITS, self.RELEVANT, 3).item() == pytest.approx(5 / 9)
        # MAP@5 = (1 + 2/3) / min(4, 5) = 5/12.
        assert map_at_k(self.HITS, self.RELEVANT, 5).item() == pytest.approx(5 / 12)
        # With one relevant item found at rank 1: MAP@5 = 1 / min(1, 5) = 1.
        assert map_at_k(as_hits([1, 0, 0, 0, 0]), torch.tensor([1]), 5).item() == 1.0

    def test_per_user_values_are_named_metric_at_k(self) -> None:
        values = ranking_metrics_per_user(self.HITS, self.RELEVANT, ks=(1, 3))
        assert set(values) == {f"{m}@{k}" for m in RANKING_METRICS for k in (1, 3)}

    def test_users_without_relevant_items_are_refused(self) -> None:
        with pytest.raises(InvalidInput, match="at least one relevant"):
            ranking_metrics_per_user(self.HITS, torch.tensor([0]), ks=(3,))

    def test_unknown_metric_names_are_refused(self) -> None:
        with pytest.raises(InvalidInput, match="Unknown ranking metric"):
            ranking_metrics_per_user(self.HITS, self.RELEVANT, ks=(3,), metrics=("ncdg",))

    def test_k_beyond_the_list_is_refused(self) -> None:
        with pytest.raises(InvalidInput, match="outside the ranked list"):
            recall_at_k(self.HITS, self.RELEVANT, 6)


@st.composite
def hit_lists(draw: st.DrawFn) -> tuple[list[bool], int]:
    length = draw(st.integers(1, 12))
    hits = draw(st.lists(st.booleans(), min_size=length, max_size=length))
    num_relevant = draw(st.integers(max(1, sum(hits)), sum(hits) + 5))
    return hits, num_relevant


@settings(max_examples=150, deadline=None)
@given(users=st.lists(hit_lists(), min_size=1, max_size=6), data=st.data())
def test_vectorised_metrics_equal_recboles_per_user_definitions(
    users: list[tuple[list[bool], int]], data: st.DataObject
) -> None:
    length = min(len(h) for h, _ in users)
    k = data.draw(st.integers(1, length))
    hits = torch.tensor([h[:length] for h, _ in users], dtype=torch.bool)
    num_relevant = torch.tensor([max(n, sum(h[:length])) for h, n in users])
    values = ranking_metrics_per_user(hits, num_relevant, ks=(k,))
    for name in RANKING_METRICS:
        expected = [
            reference_ranking_metric(name, hits[u].tolist(), int(num_relevant[u]), k) for u in range(len(users))
        ]
        assert values[f"{name}@{k}"].tolist() == pytest.approx(expected)
        assert all(0.0 <= v <= 1.0 for v in values[f"{name}@{k}"].tolist())


class TestTopK:
    def test_ties_go_to_the_lower_item_index(self) -> None:
        scores = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1]])
        # 0.9 at items 1 and 3, then 0.5 at items 0 and 2: lower index first in each tie.
        assert top_k_items(scores, 4).tolist() == [[1, 3, 0, 2]]
        assert top_k_items(scores, 3).tolist() == [[1, 3, 0]]

    def test_a_tie_across_the_cut_keeps_the_lowest_indices(self) -> None:
        scores = torch.ones(2, 50)
        assert top_k_items(scores, 3).tolist() == [[0, 1, 2], [0, 1, 2]]

    def test_minus_infinity_items_come_last(self) -> None:
        scores = torch.tensor([[float("-inf"), 0.2, float("-inf"), 0.1]])
        assert top_k_items(scores, 4).tolist() == [[1, 3, 0, 2]]

    def test_nan_scores_are_refused(self) -> None:
        with pytest.raises(InvalidInput, match="NaN"):
            top_k_items(torch.tensor([[0.1, float("nan")]]), 1)

    @settings(max_examples=60, deadline=None)
    @given(
        values=st.lists(st.integers(0, 3), min_size=2, max_size=30),
        data=st.data(),
    )
    def test_top_k_equals_a_stable_descending_sort(self, values: list[int], data: st.DataObject) -> None:
        k = data.draw(st.integers(1, len(values)))
        scores = torch.tensor([values], dtype=torch.float32)
        expected = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
        assert top_k_items(scores, k).tolist() == [expected]


class TestRankingMetricsOnScores:
    def test_excluded_items_leave_the_ranking_unless_relevant(self) -> None:
        scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
        relevant = torch.tensor([[0, 0, 1, 0]], dtype=torch.bool)
        # Without exclusion item 2 is ranked 3rd: MRR@3 = 1/3.
        assert ranking_metrics(scores, relevant, ks=(3,))["mrr@3"] == pytest.approx(1 / 3)
        # Excluding items 0 and 1 (seen in training) lifts it to rank 1.
        exclude = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
        assert ranking_metrics(scores, relevant, ks=(3,), exclude=exclude)["mrr@3"] == 1.0
        # An excluded item that is also relevant stays ranked (RecBole's history = used - positive).
        assert ranking_metrics(scores, relevant, ks=(3,), exclude=torch.ones_like(relevant))["mrr@3"] == 1.0

    def test_users_without_relevant_items_are_skipped(self) -> None:
        scores = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
        relevant = torch.tensor([[1, 0], [0, 0]], dtype=torch.bool)
        assert ranking_metrics(scores, relevant, ks=(1,))["hit@1"] == 1.0

    @settings(max_examples=60, deadline=None)
    @given(relevant=st.lists(st.booleans(), min_size=2, max_size=20).filter(any), data=st.data())
    def test_a_perfect_ranking_has_ndcg_one(self, relevant: list[bool], data: st.DataObject) -> None:
        k = data.draw(st.integers(1, len(relevant)))
        scores = torch.tensor([[1.0 if r else 0.0 for r in relevant]]) + torch.rand(1, len(relevant)) * 0.5
        metrics = ranking_metrics(scores, torch.tensor([relevant]), ks=(k,))
        assert metrics[f"ndcg@{k}"] == pytest.approx(1.0)
        assert metrics[f"map@{k}"] == pytest.approx(1.0)
        assert metrics[f"mrr@{k}"] == 1.0


class TestAuc:
    def test_hand_computed_with_a_tie(self) -> None:
        # Positives score 0.35 and 0.8; negatives 0.1, 0.4, 0.8. Pairs won: 0.35 beats 0.1 (1);
        # 0.8 beats 0.1 and 0.4 (2) and ties 0.8 (0.5). AUC = 3.5 / (2 * 3).
        assert auc([0, 0, 1, 1, 0], [0.1, 0.4, 0.35, 0.8, 0.8]) == pytest.approx(3.5 / 6)

    def test_perfect_reversed_and_tied_scores(self) -> None:
        labels = [0, 0, 1, 1]
        assert auc(labels, [0.1, 0.2, 0.3, 0.4]) == 1.0
        assert auc(labels, [0.4, 0.3, 0.2, 0.1]) == 0.0
        assert auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5

    def test_accepts_tensors(self) -> None:
        assert auc(torch.tensor([0, 1]), torch.tensor([0.2, 0.7])) == 1.0

    def test_a_single_class_is_refused(self) -> None:
        with pytest.raises(InvalidInput, match="both classes; got 3 positive and 0 negative"):
            auc([1, 1, 1], [0.1, 0.2, 0.3])

    def test_non_binary_labels_are_refused(self) -> None:
        with pytest.raises(InvalidInput, match="0 or 1"):
            auc([0, 2], [0.1, 0.2])

    @settings(max_examples=100, deadline=None)
    @given(
        rows=st.lists(st.tuples(st.booleans(), st.integers(-5, 5)), min_size=2, max_size=40).filter(
            lambda rows: 0 < sum(label for label, _ in rows) < len(rows)
        )
    )
    def test_equals_the_pairwise_definition_and_survives_monotone_transforms(
        self, rows: list[tuple[bool, int]]
    ) -> None:
        labels = np.array([label for label, _ in rows], dtype=int)
        scores = np.array([score for _, score in rows], dtype=float)
        pos, neg = scores[labels == 1], scores[labels == 0]
        pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
        value = auc(labels, scores)
        assert value == pytest.approx(pairwise)
        assert 0.0 <= value <= 1.0
        assert auc(labels, np.exp(scores) * 3 + 1) == pytest.approx(value)
        assert auc(labels, -scores) == pytest.approx(1.0 - value)


class TestGauc:
    LABELS = [0, 1, 0, 1, 1, 0, 1, 1]
    SCORES = [0.1, 0.5, 0.3, 0.2, 0.9, 0.9, 0.4, 0.6]
    GROUPS = [1, 1, 1, 2, 2, 2, 3, 3]

    def test_weights_users_by_positives_as_recbole(self) -> None:
        # User 1: positive 0.5 beats both negatives -> AUC 1 (1 positive).
        # User 2: positives 0.2, 0.9 against negative 0.9: 0 + 0.5 -> AUC 0.25 (2 positives).
        # User 3: no negative -> skipped. GAUC = (1*1 + 0.25*2) / (1 + 2) = 0.5.
        assert gauc(self.LABELS, self.SCORES, self.GROUPS) == pytest.approx(0.5)

    def test_can_weight_users_by_impressions(self) -> None:
        # Same per-user AUCs, weights 3 and 3 rows: (1*3 + 0.25*3) / 6 = 0.625.
        assert gauc(self.LABELS, self.SCORES, self.GROUPS, weight_by="impressions") == pytest.approx(0.625)

    def test_equals_auc_for_a_single_group(self) -> None:
        labels, scores = [0, 1, 1, 0, 1], [0.3, 0.3, 0.9, 0.1, 0.2]
        assert gauc(labels, scores, [7] * 5) == pytest.approx(auc(labels, scores))

    def test_no_group_with_both_classes_is_refused(self) -> None:
        with pytest.raises(InvalidInput, match="both positive and negative"):
            gauc([1, 0], [0.5, 0.5], ["a", "b"])


class TestLogLoss:
    def test_hand_computed(self) -> None:
        # -(ln 0.9 + ln 0.8) / 2
        assert log_loss([1, 0], [0.9, 0.2]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)

    def test_probabilities_are_clipped(self) -> None:
        # A certain wrong answer costs -ln(1e-15) instead of infinity.
        assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15))
        assert log_loss([0], [1.0]) == pytest.approx(-math.log(1e-15), rel=1e-3)


class TestFullSortUserAuc:
    def test_ignores_excluded_items_and_shares_ties(self) -> None:
        scores = torch.tensor([[0.9, 0.8, 0.8, 0.1, 0.5]])
        relevant = torch.tensor([[0, 1, 0, 0, 0]], dtype=torch.bool)
        excluded = torch.tensor([[1, 0, 0, 0, 0]], dtype=torch.bool)
        # Item 0 is excluded; positive 0.8 against negatives 0.8, 0.1, 0.5: 0.5 + 1 + 1 = 2.5 of 3.
        value, defined = full_sort_user_auc(scores, relevant, excluded)
        assert value.item() == pytest.approx(2.5 / 3)
        assert defined.item()

    def test_undefined_without_negatives(self) -> None:
        _, defined = full_sort_user_auc(torch.tensor([[0.3, 0.2]]), torch.tensor([[1, 0]]), torch.tensor([[0, 1]]))
        assert not defined.item()

    @settings(max_examples=60, deadline=None)
    @given(rows=st.lists(st.tuples(st.sampled_from(["pos", "neg", "out"]), st.integers(0, 4)), min_size=3, max_size=25))
    def test_equals_labelled_auc_over_the_ranked_items(self, rows: list[tuple[str, int]]) -> None:
        kinds = [kind for kind, _ in rows]
        if "pos" not in kinds or "neg" not in kinds:
            return
        scores = torch.tensor([[float(s) for _, s in rows]])
        relevant = torch.tensor([[k == "pos" for k in kinds]])
        excluded = torch.tensor([[k == "out" for k in kinds]])
        value, _ = full_sort_user_auc(scores, relevant, excluded)
        kept = [(k == "pos", s) for k, s in rows if k != "out"]
        assert value.item() == pytest.approx(auc([int(p) for p, _ in kept], [s for _, s in kept]))


class TestBeyondAccuracy:
    TOP = torch.tensor([[0, 1], [0, 2]])
    COUNTS = np.array([6, 2, 0, 0])  # 8 training interactions over 4 items

    def test_coverage_counts_distinct_recommended_items(self) -> None:
        # Items {0, 1, 2} of 4.
        assert item_coverage(self.TOP, 4) == 0.75

    def test_novelty_is_mean_self_information(self) -> None:
        # Shares: item 0 6/8, item 1 2/8, item 2 unseen -> counted once: 1/8.
        user0 = (-math.log2(6 / 8) - math.log2(2 / 8)) / 2
        user1 = (-math.log2(6 / 8) - math.log2(1 / 8)) / 2
        assert novelty(self.TOP, self.COUNTS).tolist() == pytest.approx([user0, user1])

    def test_average_popularity_is_mean_training_count(self) -> None:
        # (6 + 2) / 2 and (6 + 0) / 2.
        assert average_popularity(self.TOP, self.COUNTS).tolist() == pytest.approx([4.0, 3.0])

    def test_popularity_percentiles_share_ties(self) -> None:
        # Sorted counts 0, 0, 2, 6: ranks 1.5, 1.5, 3, 4 of 4 items.
        assert popularity_percentiles(self.COUNTS).tolist() == pytest.approx([1.0, 0.75, 0.375, 0.375])


def test_hits_of_reads_relevance_at_each_rank() -> None:
    relevant = torch.tensor([[0, 1, 0, 1]], dtype=torch.bool)
    assert hits_of(torch.tensor([[3, 0, 1]]), relevant).tolist() == [[True, False, True]]
