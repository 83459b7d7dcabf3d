"""Evaluation metrics, defined exactly as RecBole 1.2.1 defines them so recplane's numbers are comparable.

Three families, all pure functions over tensors and arrays:

* **ranking @K** (Recall, NDCG, MRR, Hit, Precision, MAP) over a top-K list, computed per user from a
  ``[B, K]`` boolean *hits* matrix (is the item at rank ``j`` relevant?) and each user's number of relevant
  items, as in ``recbole/evaluator/metrics.py``;
* **CTR** (AUC, GAUC, LogLoss) over labelled rows, tie-aware (tied scores share their average rank, which is
  what sklearn's ``roc_auc_score`` and RecBole's trapezoidal AUC compute);
* **beyond accuracy** (catalog coverage, novelty, average popularity and popularity percentile of the
  recommended items) from the top-K item ids and the items' training interaction counts.

Top-K lists are built by :func:`top_k_items`, which breaks ties deterministically (higher score first, then
lower item index), unlike ``torch.topk`` whose order among equal scores is unspecified.
The formulas are written out in ``docs/evaluation.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from recplane.errors import InvalidInput

__all__ = [
    "RANKING_METRICS",
    "auc",
    "average_popularity",
    "full_sort_user_auc",
    "gauc",
    "hit_at_k",
    "hits_of",
    "item_coverage",
    "log_loss",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "popularity_percentiles",
    "precision_at_k",
    "ranking_metrics",
    "ranking_metrics_per_user",
    "recall_at_k",
    "top_k_items",
]

RANKING_METRICS: tuple[str, ...] = ("recall", "mrr", "ndcg", "hit", "precision", "map")
"""Names of the ranking metrics, lower-case as RecBole reports them (``recall@10`` ...)."""

_COMPARE_ELEMENTS = 1 << 22
"""Scores compared per step when locating relevant items in their rows (bounds a temporary's size)."""

LOGLOSS_EPS = 1e-15
"""Probabilities are clipped to ``[eps, 1 - eps]`` before the log, as RecBole's ``LogLoss`` does."""


def top_k_items(scores: Tensor, k: int) -> Tensor:
    """``[B, k]`` item indices of the ``k`` best scores per row; ties go to the lower item index."""
    if scores.dim() != 2:
        raise InvalidInput(f"scores must be a [users, items] matrix; got shape {tuple(scores.shape)}.")
    num_items = scores.shape[1]
    if not 1 <= k <= num_items:
        raise InvalidInput(f"k must be between 1 and the number of items ({num_items}); got {k}.")
    if torch.isnan(scores).any():
        raise InvalidInput("scores contain NaN; a model that outputs NaN cannot be ranked. Check its training.")
    values, items = torch.topk(scores, k, dim=1)
    kth = values[:, -1:]
    # Rows where the tie at the k-th score spills past the list: topk chose arbitrary members of the tie.
    tied_at_cut = (scores == kth).sum(dim=1) > (values == kth).sum(dim=1)
    if tied_at_cut.any():
        rows = tied_at_cut.nonzero(as_tuple=True)[0]
        _, stable_order = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        values[rows] = torch.gather(scores[rows], 1, stable_order[:, :k])
        items[rows] = stable_order[:, :k]
    # Order equal scores inside the list by item index: sort by index, then stably by score.
    by_index, order = torch.sort(items, dim=1)
    values = torch.gather(values, 1, order)
    _, by_score = torch.sort(values, dim=1, descending=True, stable=True)
    return torch.gather(by_index, 1, by_score)


def hits_of(top_items: Tensor, relevant: Tensor) -> Tensor:
    """``[B, K]`` booleans: is the item at each rank of ``top_items`` relevant (``relevant`` is ``[B, N]``)?"""
    return torch.gather(relevant.to(torch.bool), 1, top_items)


def _check_k(hits: Tensor, k: int) -> None:
    if not 1 <= k <= hits.shape[1]:
        raise InvalidInput(f"k={k} is outside the ranked list of length {hits.shape[1]}; rank at least k items.")


def _cumulative_hits(hits: Tensor, k: int) -> Tensor:
    _check_k(hits, k)
    return hits[:, :k].to(torch.float64).sum(dim=1)


def hit_at_k(hits: Tensor, num_relevant: Tensor, k: int) -> Tensor:
    """Per user: 1 if any of the top ``k`` items is relevant, else 0."""
    return (_cumulative_hits(hits, k) > 0).to(torch.float64)


def recall_at_k(hits: Tensor, num_relevant: Tensor, k: int) -> Tensor:
    """Per user: relevant items in the top ``k`` divided by all of the user's relevant items."""
    return _cumulative_hits(hits, k) / num_relevant.to(torch.float64)


def precision_at_k(hits: Tensor, num_relevant: Tensor, k: int) -> Tensor:
    """Per user: relevant items in the top ``k`` divided by ``k``."""
    return _cumulative_hits(hits, k) / k


def mrr_at_k(hits: Tensor, num_relevant: Tensor, k: int) -> Tensor:
    """Per user: ``1 / rank`` of the first relevant item when it is within the top ``k``, else 0."""
    _check_k(hits, k)
    top = hits[:, :k]
    first = top.to(torch.int8).argmax(dim=1)
    found = top.any(dim=1)
    return torch.where(found, 1.0 / (first.to(torch.float64) + 1.0), torch.zeros_like(first, dtype=torch.float64))


def _discounts(length: int, device: torch.device) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, length + 2, dtype=torch.float64, device=device))


def ndcg_at_k(hits: Tensor, num_relevant: Tensor, k: int) -> Tensor:
    """Per user: binary-relevance DCG@k over the ideal DCG of ``min(num_relevant, k)`` hits at the top."""
    _check_k(hits, k)
    discounts = _discounts(k, hits.device)
    dcg = (hits[:, :k].to(torch.float64) * discounts).sum(dim=1)
    ideal_lengths = torch.clamp(num_relevant.to(torch.long), 1, k)
    idcg = torch.cumsum(discounts, dim=0)[ideal_lengths - 1]
    return dcg / idcg


def map_at_k(hits: Tensor, num_relevant: Tensor, k: int) -> Tensor:
    """Per user: sum of precision@j at each relevant rank ``j <= k``, divided by ``min(num_relevant, k)``."""
    _check_k(hits, k)
    top = hits[:, :k].to(torch.float64)
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=hits.device)
    precision_at_rank = torch.cumsum(top, dim=1) / ranks
    normaliser = torch.clamp(num_relevant.to(torch.float64), max=float(k))
    return (precision_at_rank * top).sum(dim=1) / normaliser


_PER_USER = {
    "recall": recall_at_k,
    "mrr": mrr_at_k,
    "ndcg": ndcg_at_k,
    "hit": hit_at_k,
    "precision": precision_at_k,
    "map": map_at_k,
}


def _check_metric_names(metrics: Sequence[str]) -> None:
    unknown = [name for name in metrics if name not in _PER_USER]
    if unknown:
        raise InvalidInput(f"Unknown ranking metric(s) {unknown}; choose from {list(RANKING_METRICS)}.")


def ranking_metrics_per_user(
    hits: Tensor, num_relevant: Tensor, ks: Sequence[int], metrics: Sequence[str] = RANKING_METRICS
) -> dict[str, Tensor]:
    """Per-user values ``{"recall@10": [B], ...}`` of each metric at each ``k``; users need >= 1 relevant item."""
    _check_metric_names(metrics)
    if bool((num_relevant < 1).any()):
        raise InvalidInput("Every user passed to a ranking metric needs at least one relevant item; drop the others.")
    return {f"{name}@{k}": _PER_USER[name](hits, num_relevant, k) for name in metrics for k in ks}


def ranking_metrics(
    scores: Tensor,
    relevant: Tensor,
    ks: Sequence[int] = (5, 10, 20),
    *,
    exclude: Tensor | None = None,
    metrics: Sequence[str] = RANKING_METRICS,
) -> dict[str, float]:
    """Mean ranking metrics of a small ``[B, N]`` score matrix against a ``[B, N]`` relevance mask.

    ``exclude`` marks items to drop from each user's ranking (e.g. training items); an item that is both
    excluded and relevant stays ranked, as in RecBole. Users without a relevant item are skipped. For
    large catalogues use :func:`recplane.training.evaluate.evaluate_full_sort`, which works in blocks.
    """
    if scores.shape != relevant.shape:
        raise InvalidInput(f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)} differ in shape.")
    relevant = relevant.to(torch.bool)
    if exclude is not None:
        scores = scores.masked_fill(exclude.to(torch.bool) & ~relevant, float("-inf"))
    num_relevant = relevant.sum(dim=1)
    keep = num_relevant > 0
    if not bool(keep.any()):
        raise InvalidInput("No user has a relevant item; ranking metrics are undefined.")
    top = top_k_items(scores[keep], max(ks))
    per_user = ranking_metrics_per_user(hits_of(top, relevant[keep]), num_relevant[keep], ks, metrics)
    return {name: float(values.mean()) for name, values in per_user.items()}


def full_sort_user_auc(scores: Tensor, relevant: Tensor, excluded: Tensor) -> tuple[Tensor, Tensor]:
    """Per-user AUC of relevant items against every other ranked item, and whether it is defined.

    This is RecBole's ranking-mode GAUC term: excluded items (``-inf`` in RecBole) take no part, ties share
    their average rank, and a user with no negative left is undefined (``False`` in the second tensor).
    """
    relevant = relevant.to(torch.bool)
    masked = scores.masked_fill(excluded.to(torch.bool) & ~relevant, float("-inf"))
    # Like RecBole, every item at -inf (excluded, or scored so) is out of the candidate list.
    num_dropped = torch.isneginf(masked).sum(dim=1)
    rows, cols = relevant.nonzero(as_tuple=True)
    relevant_scores = masked[rows, cols].unsqueeze(1)
    below = torch.empty_like(rows)
    tied = torch.empty_like(rows)
    # Compare each relevant item with its user's row, a bounded number of rows at a time.
    chunk = max(1, _COMPARE_ELEMENTS // max(scores.shape[1], 1))
    for start in range(0, len(rows), chunk):
        candidates = masked[rows[start : start + chunk]]
        below[start : start + chunk] = (candidates < relevant_scores[start : start + chunk]).sum(dim=1)
        tied[start : start + chunk] = (candidates == relevant_scores[start : start + chunk]).sum(dim=1)
    # Ranks below + 1 .. below + tied share their mean; -inf items are not candidates.
    below = torch.clamp(below - num_dropped[rows], min=0)
    average_rank = below.to(torch.float64) + (tied.to(torch.float64) + 1.0) / 2.0
    rank_sum = torch.zeros(len(scores), dtype=torch.float64, device=scores.device).index_add_(0, rows, average_rank)
    num_positive = relevant.sum(dim=1).to(torch.float64)
    negatives = scores.shape[1] - num_dropped.to(torch.float64) - num_positive
    defined = (num_positive > 0) & (negatives > 0)
    pairs = torch.where(defined, num_positive * negatives, torch.ones_like(num_positive))
    user_auc = (rank_sum - num_positive * (num_positive + 1.0) / 2.0) / pairs
    return torch.where(defined, user_auc, torch.zeros_like(user_auc)), defined


def _as_numpy(values: Any, name: str) -> npt.NDArray[Any]:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidInput(f"{name} must be one-dimensional; got shape {array.shape}.")
    return array


def _binary_labels(labels: Any) -> npt.NDArray[np.bool_]:
    array = _as_numpy(labels, "labels")
    if not np.isin(array, (0, 1)).all():
        bad = array[~np.isin(array, (0, 1))][:3].tolist()
        raise InvalidInput(f"labels must be 0 or 1; got values such as {bad}.")
    return array.astype(bool)


def _tie_ranks(starts: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """1-based ranks of sorted rows, where ``starts`` marks each row that begins a run of equal keys."""
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(starts)] - 1
    return ((first + last) / 2.0 + 1.0)[np.cumsum(starts) - 1]


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks of ``values`` in ascending order, ties sharing the mean of their positions."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = _tie_ranks(np.r_[True, ordered[1:] != ordered[:-1]])
    return ranks


def auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve; tied scores count one half (sklearn's ``roc_auc_score``, RecBole's ``AUC``)."""
    truth = _binary_labels(labels)
    values = _as_numpy(scores, "scores").astype(np.float64)
    if len(truth) != len(values):
        raise InvalidInput(f"labels ({len(truth)}) and scores ({len(values)}) differ in length.")
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        raise InvalidInput(f"AUC needs both classes; got {positives} positive and {negatives} negative label(s).")
    ranks = _average_ranks(values)
    return float((ranks[truth].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def gauc(labels: Any, scores: Any, groups: Any, *, weight_by: str = "positives") -> float:
    """Group AUC: per-group (per-user) AUC averaged with weights; groups with one class only are skipped.

    ``weight_by="positives"`` weighs each group by its number of positive rows, as RecBole's ``GAUC`` does;
    ``"impressions"`` weighs it by all its rows (the DIN paper's click/impression weighting).
    """
    if weight_by not in ("positives", "impressions"):
        raise InvalidInput(f"weight_by must be 'positives' or 'impressions'; got {weight_by!r}.")
    truth = _binary_labels(labels)
    values = _as_numpy(scores, "scores").astype(np.float64)
    group_ids = _as_numpy(groups, "groups")
    if not len(truth) == len(values) == len(group_ids):
        raise InvalidInput(
            f"labels ({len(truth)}), scores ({len(values)}) and groups ({len(group_ids)}) differ in length."
        )
    if len(truth) == 0:
        raise InvalidInput("GAUC needs at least one row.")
    _, group_index = np.unique(group_ids, return_inverse=True)
    group_index = group_index.reshape(-1)
    order = np.lexsort((values, group_index))
    ordered_groups, ordered_values = group_index[order], values[order]
    starts = np.r_[True, (ordered_groups[1:] != ordered_groups[:-1]) | (ordered_values[1:] != ordered_values[:-1])]
    sizes = np.bincount(group_index)
    # Ranks over the (group, score)-sorted rows, shifted so each group's ranks start at 1.
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = _tie_ranks(starts) - np.repeat(np.r_[0, np.cumsum(sizes)[:-1]], sizes)
    positives = np.bincount(group_index, weights=truth.astype(np.float64), minlength=len(sizes))
    negatives = sizes - positives
    rank_sums = np.bincount(group_index, weights=np.where(truth, ranks, 0.0), minlength=len(sizes))
    defined = (positives > 0) & (negatives > 0)
    if not defined.any():
        raise InvalidInput("GAUC needs at least one group with both positive and negative labels.")
    per_group = (rank_sums[defined] - positives[defined] * (positives[defined] + 1) / 2.0) / (
        positives[defined] * negatives[defined]
    )
    weights = positives[defined] if weight_by == "positives" else sizes[defined].astype(np.float64)
    return float((per_group * weights).sum() / weights.sum())


def log_loss(labels: Any, probabilities: Any, *, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy of predicted probabilities, clipped to ``[eps, 1 - eps]`` (RecBole's)."""
    truth = _binary_labels(labels).astype(np.float64)
    predicted = np.clip(_as_numpy(probabilities, "probabilities").astype(np.float64), eps, 1.0 - eps)
    if len(truth) != len(predicted):
        raise InvalidInput(f"labels ({len(truth)}) and probabilities ({len(predicted)}) differ in length.")
    if len(truth) == 0:
        raise InvalidInput("log_loss needs at least one row.")
    return float(np.mean(-truth * np.log(predicted) - (1.0 - truth) * np.log(1.0 - predicted)))


def item_coverage(top_items: Tensor, num_items: int) -> float:
    """Distinct items recommended across all lists divided by the catalogue size."""
    if num_items < 1:
        raise InvalidInput(f"num_items must be positive; got {num_items}.")
    return int(torch.unique(top_items).numel()) / num_items


def _counts_tensor(item_counts: Any, like: Tensor) -> Tensor:
    counts = torch.as_tensor(np.asarray(item_counts), device=like.device).to(torch.float64)
    if counts.dim() != 1:
        raise InvalidInput(f"item_counts must be one count per item; got shape {tuple(counts.shape)}.")
    return counts


def novelty(top_items: Tensor, item_counts: Any) -> Tensor:
    """Per user: mean self-information ``-log2(count_i / total)`` of the recommended items.

    ``item_counts`` are training interactions per item; an item never seen in training counts as seen once
    (so its self-information is finite and the largest possible).
    """
    counts = _counts_tensor(item_counts, top_items)
    share = torch.clamp(counts, min=1.0) / torch.clamp(counts.sum(), min=1.0)
    return (-torch.log2(share))[top_items].mean(dim=1)


def average_popularity(top_items: Tensor, item_counts: Any) -> Tensor:
    """Per user: mean training interaction count of the recommended items (RecBole's ``AveragePopularity``)."""
    return _counts_tensor(item_counts, top_items)[top_items].mean(dim=1)


def popularity_percentiles(item_counts: Any) -> npt.NDArray[np.float64]:
    """Per item: its popularity percentile in ``(0, 1]`` among all items (tied counts share the mean rank)."""
    counts = np.asarray(item_counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) == 0:
        raise InvalidInput(f"item_counts must be a non-empty vector; got shape {counts.shape}.")
    return _average_ranks(counts) / len(counts)
