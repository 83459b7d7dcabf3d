"""Full-sort evaluation: rank every item for every test user, block by block, and compute all metrics.

The driver asks a score function for ``[B, num_items]`` blocks of users (``B`` bounded by ``batch_users``
or by ``max_block_elements``), so memory stays at a few ``B x num_items`` tensors however many users there
are; it never builds a ``num_users x num_items`` matrix. In each block it masks the items to exclude
(RecBole's "history": the user's earlier interactions minus the current positives) to ``-inf``, takes the
deterministic top-K (:func:`~recplane.training.metrics.top_k_items`), and accumulates per-user ranking
metrics, RecBole's full-sort GAUC, beyond-accuracy measures and the cold/warm segment breakdown.

Ids are model indices: users are non-negative integers, items ``0 .. num_items - 1`` (no padding item;
mapping raw ids to indices is the caller's job).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from torch import Tensor

from recplane.errors import InvalidInput
from recplane.training.metrics import (
    RANKING_METRICS,
    average_popularity,
    full_sort_user_auc,
    hits_of,
    novelty,
    popularity_percentiles,
    ranking_metrics_per_user,
    top_k_items,
)

__all__ = [
    "DEFAULT_COLD_THRESHOLD",
    "DEFAULT_MAX_BLOCK_ELEMENTS",
    "EvaluationResult",
    "Interactions",
    "ScoreFn",
    "evaluate_full_sort",
]

ScoreFn = Callable[[Tensor], Tensor]
"""``scores(user_ids: LongTensor[B]) -> Tensor[B, num_items]``: a model's scores for every item."""

DEFAULT_COLD_THRESHOLD = 5
"""Users and items with fewer training interactions than this are *cold*."""

DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 24
"""Default bound on ``B * num_items`` per score block (16M floats, 64 MiB in float32)."""

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Interactions:
    """(user, item) pairs as two aligned int64 index vectors."""

    user_ids: IntArray
    item_ids: IntArray

    def __post_init__(self) -> None:
        users = np.asarray(self.user_ids, dtype=np.int64).reshape(-1)
        items = np.asarray(self.item_ids, dtype=np.int64).reshape(-1)
        if len(users) != len(items):
            raise InvalidInput(f"user_ids ({len(users)}) and item_ids ({len(items)}) differ in length.")
        if len(users) and (users.min() < 0 or items.min() < 0):
            raise InvalidInput("user and item indices must be non-negative; map raw ids to indices first.")
        object.__setattr__(self, "user_ids", users)
        object.__setattr__(self, "item_ids", items)

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def from_arrow(cls, table: pa.Table, *, user_col: str = "user_id", item_col: str = "item_id") -> Interactions:
        """The (user, item) index columns of an Arrow table."""
        missing = [name for name in (user_col, item_col) if name not in table.column_names]
        if missing:
            raise InvalidInput(f"The table has no column(s) {missing}; its columns are {table.column_names}.")
        with_nulls = [name for name in (user_col, item_col) if table.column(name).null_count]
        if with_nulls:
            raise InvalidInput(f"Column(s) {with_nulls} have null values; every interaction needs a user and an item.")
        return cls(
            user_ids=np.asarray(table.column(user_col).to_numpy(), dtype=np.int64),
            item_ids=np.asarray(table.column(item_col).to_numpy(), dtype=np.int64),
        )


@dataclass(frozen=True)
class EvaluationResult:
    """Mean metrics over the evaluated users, overall and per segment.

    ``metrics`` holds ``recall@10``-style ranking metrics, ``gauc``, ``itemcoverage@k`` and, when training
    interactions were given, ``novelty@k``, ``averagepopularity@k``, ``popularitypercentile@k`` and the same
    two popularity measures of the test items (``test_averagepopularity``, ``test_popularitypercentile``).
    ``segments`` maps ``cold_users`` / ``warm_users`` (every per-user metric) and ``cold_items`` /
    ``warm_items`` (ranking metrics with relevance restricted to those items) to their means; ``num_users``
    counts the users behind each (``all`` included).
    """

    metrics: dict[str, float]
    segments: dict[str, dict[str, float]] = field(default_factory=dict)
    num_users: dict[str, int] = field(default_factory=dict)

    def rounded(self, digits: int = 4) -> dict[str, Any]:
        """A JSON-ready view with values rounded to ``digits`` (RecBole reports 4), keys sorted."""
        return {
            "metrics": {name: round(value, digits) for name, value in sorted(self.metrics.items())},
            "segments": {
                segment: {name: round(value, digits) for name, value in sorted(values.items())}
                for segment, values in self.segments.items()
            },
            "num_users": dict(self.num_users),
        }


class _UserItemIndex:
    """Each user's items in CSR form, to build a block's ``[B, num_items]`` mask without a full matrix."""

    def __init__(self, pairs: Sequence[Interactions], num_users: int, num_items: int) -> None:
        users = np.concatenate([p.user_ids for p in pairs]) if pairs else np.zeros(0, dtype=np.int64)
        items = np.concatenate([p.item_ids for p in pairs]) if pairs else np.zeros(0, dtype=np.int64)
        keys = np.unique(users * num_items + items)
        self.items = torch.from_numpy(keys % num_items)
        self.indptr = torch.from_numpy(np.r_[0, np.cumsum(np.bincount(keys // num_items, minlength=num_users))])
        self.num_items = num_items

    def mask(self, users: Tensor, device: torch.device) -> Tensor:
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(users)), lengths)
        offsets = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths)
        cols = self.items[torch.arange(int(lengths.sum())) + offsets]
        mask = torch.zeros(len(users), self.num_items, dtype=torch.bool, device=device)
        mask[rows.to(device), cols.to(device)] = True
        return mask


class _Means:
    """Running sums of per-user values (or weighted values) per segment and metric."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.weights: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.users: dict[str, int] = defaultdict(int)

    def add(self, segment: str, values: dict[str, Tensor], rows: Tensor, weights: Tensor | None = None) -> None:
        w = rows.to(torch.float64) if weights is None else weights.to(torch.float64) * rows
        for name, per_user in values.items():
            self.sums[segment][name] += float((per_user.to(torch.float64) * w).sum())
            self.weights[segment][name] += float(w.sum())

    def count(self, segment: str, rows: Tensor) -> None:
        self.users[segment] += int(rows.sum())

    def means(self, segment: str) -> dict[str, float]:
        return {
            name: total / self.weights[segment][name]
            for name, total in self.sums[segment].items()
            if self.weights[segment][name] > 0
        }


def _check_items(name: str, pairs: Interactions, num_items: int) -> None:
    if len(pairs) and pairs.item_ids.max() >= num_items:
        raise InvalidInput(
            f"{name} has item index {int(pairs.item_ids.max())} but num_items is {num_items}; "
            "item indices must be 0 .. num_items - 1."
        )


def _check_request(test: Interactions, num_items: int, ks: Sequence[int], metrics: Sequence[str]) -> None:
    if num_items < 1:
        raise InvalidInput(f"num_items must be positive; got {num_items}.")
    if not ks or min(ks) < 1 or max(ks) > num_items:
        raise InvalidInput(f"ks must be non-empty, each between 1 and num_items ({num_items}); got {list(ks)}.")
    unknown = [m for m in metrics if m not in (*RANKING_METRICS, "gauc")]
    if unknown:
        raise InvalidInput(f"Unknown metric(s) {unknown}; choose from {[*RANKING_METRICS, 'gauc']}.")
    if len(test) == 0:
        raise InvalidInput("There are no test interactions to evaluate.")


def evaluate_full_sort(
    scores: ScoreFn,
    test: Interactions,
    *,
    num_items: int,
    exclude: Sequence[Interactions] = (),
    train: Interactions | None = None,
    ks: Sequence[int] = (5, 10, 20),
    metrics: Sequence[str] = RANKING_METRICS,
    batch_users: int | None = None,
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
    cold_threshold: int = DEFAULT_COLD_THRESHOLD,
) -> EvaluationResult:
    """Rank all items for every user in ``test`` and return the mean metrics, overall and per segment.

    ``exclude`` holds the interactions to mask out of each ranking (RecBole's protocol: train when
    validating, train and valid when testing; nothing for sequential models), except items that are the
    user's test positives. ``metrics`` are ranking metric names plus ``"gauc"`` (RecBole's full-sort GAUC,
    opt-in: it compares each test item with its user's whole row). ``train`` gives item popularity and the
    cold/warm segments; without it only the ranking metrics, GAUC and coverage are computed. Each user is
    scored once, in blocks of ``batch_users`` (default: as many as fit ``max_block_elements`` scores).
    """
    _check_request(test, num_items, ks, metrics)
    for name, pairs in [("test", test), *[(f"exclude[{i}]", p) for i, p in enumerate(exclude)]]:
        _check_items(name, pairs, num_items)
    known = [test, *exclude, *([train] if train is not None else [])]
    num_users = int(max(int(p.user_ids.max()) for p in known if len(p))) + 1
    block = batch_users if batch_users is not None else max(1, max_block_elements // num_items)
    if block < 1:
        raise InvalidInput(f"batch_users must be at least 1; got {batch_users}.")

    context = _Context.build(test, exclude, train, num_users, num_items, cold_threshold)
    eval_users = torch.from_numpy(np.unique(test.user_ids))
    means = _Means()
    seen = torch.zeros(len(ks), num_items, dtype=torch.bool)
    rank_metrics = [m for m in metrics if m in RANKING_METRICS]
    for start in range(0, len(eval_users), block):
        users = eval_users[start : start + block]
        with torch.no_grad():
            block_scores = scores(users)
        if tuple(block_scores.shape) != (len(users), num_items):
            raise InvalidInput(
                f"The score function returned shape {tuple(block_scores.shape)} for {len(users)} users; "
                f"expected ({len(users)}, {num_items})."
            )
        _evaluate_block(block_scores.detach(), users, context, ks, rank_metrics, "gauc" in metrics, means, seen)

    result = means.means("all")
    result.update({f"itemcoverage@{k}": float(seen[i].sum()) / num_items for i, k in enumerate(ks)})
    segments = {name: means.means(name) for name in ("cold_users", "warm_users", "cold_items", "warm_items")}
    return EvaluationResult(
        metrics=result,
        segments={name: values for name, values in segments.items() if values} if train is not None else {},
        num_users=dict(means.users),
    )


@dataclass(frozen=True)
class _Popularity:
    """Training popularity: per-item counts and percentiles, cold masks, and each user's test-item means."""

    item_counts: Tensor
    item_percentiles: Tensor
    cold_users: Tensor
    cold_items: Tensor
    test_counts: Tensor
    test_percentiles: Tensor

    @staticmethod
    def build(train: Interactions, relevant: _UserItemIndex, num_users: int, cold_threshold: int) -> _Popularity:
        item_counts = np.bincount(train.item_ids, minlength=relevant.num_items).astype(np.float64)
        percentiles = popularity_percentiles(item_counts)
        per_user = np.diff(relevant.indptr.numpy())
        owners = np.repeat(np.arange(num_users), per_user)
        items = relevant.items.numpy()
        divisor = np.maximum(per_user, 1)
        return _Popularity(
            item_counts=torch.from_numpy(item_counts),
            item_percentiles=torch.from_numpy(percentiles),
            cold_users=torch.from_numpy(np.bincount(train.user_ids, minlength=num_users) < cold_threshold),
            cold_items=torch.from_numpy(item_counts < cold_threshold),
            test_counts=torch.from_numpy(np.bincount(owners, item_counts[items], num_users) / divisor),
            test_percentiles=torch.from_numpy(np.bincount(owners, percentiles[items], num_users) / divisor),
        )


@dataclass(frozen=True)
class _Context:
    """What every block needs: the test and exclusion indices, and popularity when training data is known."""

    relevant: _UserItemIndex
    excluded: _UserItemIndex | None
    popularity: _Popularity | None

    @staticmethod
    def build(
        test: Interactions,
        exclude: Sequence[Interactions],
        train: Interactions | None,
        num_users: int,
        num_items: int,
        cold_threshold: int,
    ) -> _Context:
        relevant = _UserItemIndex([test], num_users, num_items)
        excluded = _UserItemIndex(exclude, num_users, num_items) if any(len(p) for p in exclude) else None
        if train is None:
            return _Context(relevant, excluded, None)
        _check_items("train", train, num_items)
        return _Context(relevant, excluded, _Popularity.build(train, relevant, num_users, cold_threshold))


def _evaluate_block(
    block_scores: Tensor,
    users: Tensor,
    context: _Context,
    ks: Sequence[int],
    rank_metrics: Sequence[str],
    with_gauc: bool,
    means: _Means,
    seen: Tensor,
) -> None:
    device = block_scores.device
    relevant = context.relevant.mask(users, device)
    excluded = context.excluded.mask(users, device) if context.excluded is not None else torch.zeros_like(relevant)
    ranked = block_scores.masked_fill(excluded & ~relevant, float("-inf"))
    top = top_k_items(ranked, max(ks))
    num_relevant = relevant.sum(dim=1)
    values = ranking_metrics_per_user(hits_of(top, relevant), num_relevant, ks, rank_metrics)
    for i, k in enumerate(ks):
        seen[i, top[:, :k].reshape(-1).cpu()] = True
    popularity = context.popularity
    if popularity is not None:
        values.update(_popularity_values(top, users, popularity, ks))

    everyone = torch.ones(len(users), dtype=torch.bool, device=device)
    segments: dict[str, Tensor] = {"all": everyone}
    if popularity is not None:
        cold = popularity.cold_users[users].to(device)
        segments.update(cold_users=cold, warm_users=~cold)
    for name, rows in segments.items():
        means.add(name, values, rows)
        means.count(name, rows)
    if with_gauc:
        user_auc, defined = full_sort_user_auc(block_scores, relevant, excluded)
        for name, rows in segments.items():
            means.add(name, {"gauc": user_auc}, rows & defined, weights=num_relevant)
    if popularity is not None:
        cold_items = popularity.cold_items.to(device)
        for name, item_mask in (("cold_items", cold_items), ("warm_items", ~cold_items)):
            _add_item_segment(name, top, relevant & item_mask, ks, rank_metrics, means)


def _popularity_values(top: Tensor, users: Tensor, popularity: _Popularity, ks: Sequence[int]) -> dict[str, Tensor]:
    counts = popularity.item_counts.to(top.device)
    percentiles = popularity.item_percentiles.to(top.device)
    values: dict[str, Tensor] = {}
    for k in ks:
        values[f"novelty@{k}"] = novelty(top[:, :k], counts)
        values[f"averagepopularity@{k}"] = average_popularity(top[:, :k], counts)
        values[f"popularitypercentile@{k}"] = percentiles[top[:, :k]].mean(dim=1)
    values["test_averagepopularity"] = popularity.test_counts[users].to(top.device)
    values["test_popularitypercentile"] = popularity.test_percentiles[users].to(top.device)
    return values


def _add_item_segment(
    name: str, top: Tensor, relevant: Tensor, ks: Sequence[int], rank_metrics: Sequence[str], means: _Means
) -> None:
    num_relevant = relevant.sum(dim=1)
    rows = num_relevant > 0
    if not bool(rows.any()):
        return
    values = ranking_metrics_per_user(hits_of(top[rows], relevant[rows]), num_relevant[rows], ks, rank_metrics)
    means.add(name, values, torch.ones(int(rows.sum()), dtype=torch.bool, device=top.device))
    means.count(name, rows)
