"""Business rules over candidate matrices: pure, vectorised functions of NumPy arrays, no per-item Python.

Candidates of a batch are a ``[B, C]`` matrix of item model ids (``-1`` = empty slot) with their scores. Each rule
returns new candidates and a ``[B]`` mask of the rows it changed, so a response can name the rules that shaped
it. Exclusions (seen items, blocked items and categories, the request's own ``exclude``) run before ranking,
where dropping is cheapest; boosts, dedupe and the per-category cap run on the ranked scores, best first.
:class:`ItemRules` is a deployment's rules compiled once (:func:`compile_rules`) into arrays indexed by item model id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recplane.serving.spec import RulesSpec
from recplane.training.bundle import IdIndex, UserInteractions

__all__ = [
    "Boost",
    "Candidates",
    "ItemRules",
    "RuleLog",
    "boost",
    "cap_per_category",
    "compile_rules",
    "dedupe",
    "exclude_items",
    "exclude_per_row",
    "exclude_seen",
    "item_categories",
    "top_k",
]


@dataclass(frozen=True)
class Candidates:
    """Item model ids ``[B, C]`` (``-1`` = empty), their current scores and their retrieval scores."""

    ids: np.ndarray
    scores: np.ndarray
    retrieval_scores: np.ndarray

    @classmethod
    def of(cls, ids: np.ndarray, scores: np.ndarray) -> Candidates:
        """Fresh candidates whose retrieval scores are their scores; empty slots score ``-inf``."""
        ids = np.asarray(ids, dtype=np.int64)
        scores = np.where(ids >= 0, np.asarray(scores, dtype=np.float32), -np.inf).astype(np.float32)
        return cls(ids, scores, scores.copy())

    @property
    def valid(self) -> np.ndarray:
        """``[B, C]`` bool: which slots hold an item."""
        return self.ids >= 0

    def counts(self) -> np.ndarray:
        """Items per row."""
        return self.valid.sum(axis=1)

    def without(self, mask: np.ndarray) -> Candidates:
        """These candidates with the ``mask`` slots emptied."""
        drop = mask & self.valid
        return Candidates(
            np.where(drop, -1, self.ids),
            np.where(drop, -np.inf, self.scores).astype(np.float32, copy=False),
            np.where(drop, -np.inf, self.retrieval_scores).astype(np.float32, copy=False),
        )

    def with_scores(self, scores: np.ndarray) -> Candidates:
        """New scores for the same items (empty slots stay ``-inf``)."""
        scored = np.where(self.valid, scores, -np.inf).astype(np.float32, copy=False)
        return Candidates(self.ids, scored, self.retrieval_scores)

    def best_first(self, width: int | None = None) -> Candidates:
        """Each row sorted by score, best first, empty slots last, cut to ``width`` columns."""
        order = np.argsort(-self.scores, axis=1, kind="stable")
        if width is not None:
            order = order[:, :width]
        rows = np.arange(len(order))[:, None]  # plain fancy indexing: take_along_axis costs more per call
        return Candidates(self.ids[rows, order], self.scores[rows, order], self.retrieval_scores[rows, order])

    def has_duplicates(self) -> bool:
        """Whether some row holds an item twice."""
        ordered = np.sort(self.ids, axis=1)
        return bool(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any())


def _changed(before: Candidates, after_mask: np.ndarray) -> np.ndarray:
    return (after_mask & before.valid).any(axis=1)


def exclude_seen(
    candidates: Candidates, users: np.ndarray, interactions: UserInteractions
) -> tuple[Candidates, np.ndarray]:
    """Drop items each row's user interacted with (``users``: model ids, one per row)."""
    seen = interactions.seen(users, candidates.ids)
    return candidates.without(seen), _changed(candidates, seen)


def exclude_items(candidates: Candidates, blocked: np.ndarray) -> tuple[Candidates, np.ndarray]:
    """Drop items whose entry in ``blocked`` (bool, indexed by item model id) is set."""
    mask = blocked[np.maximum(candidates.ids, 0)] & candidates.valid
    return candidates.without(mask), _changed(candidates, mask)


def exclude_per_row(candidates: Candidates, excluded: Sequence[np.ndarray]) -> tuple[Candidates, np.ndarray]:
    """Drop, in row ``b``, the item model ids ``excluded[b]`` (a request's own exclusions)."""
    lengths = np.array([len(items) for items in excluded], dtype=np.int64)
    if lengths.sum() == 0:
        return candidates, np.zeros(len(candidates.ids), dtype=bool)
    stride = int(max(candidates.ids.max(initial=0), max(int(np.max(e, initial=0)) for e in excluded))) + 1
    rows = np.repeat(np.arange(len(excluded), dtype=np.int64), lengths)
    wanted = rows * stride + np.concatenate([np.asarray(e, dtype=np.int64) for e in excluded])
    keys = np.arange(len(candidates.ids), dtype=np.int64)[:, None] * stride + candidates.ids
    mask = np.isin(keys, wanted) & candidates.valid
    return candidates.without(mask), _changed(candidates, mask)


@dataclass(frozen=True)
class Boost:
    """``score * multiply + add`` for the items set in ``items`` (bool, indexed by item model id)."""

    items: np.ndarray
    multiply: float = 1.0
    add: float = 0.0


def boost(candidates: Candidates, rule: Boost) -> tuple[Candidates, np.ndarray]:
    """Apply one boost (scores change, order is restored by the next :meth:`Candidates.best_first`)."""
    mask = rule.items[np.maximum(candidates.ids, 0)] & candidates.valid
    scores = np.where(mask, candidates.scores * rule.multiply + rule.add, candidates.scores)
    return candidates.with_scores(scores), _changed(candidates, mask)


def dedupe(candidates: Candidates) -> tuple[Candidates, np.ndarray]:
    """Keep each item once per row: its best-scored slot."""
    ordered = candidates.best_first()
    rows = ordered.ids.shape[0]
    stride = int(ordered.ids.max(initial=0)) + 1
    keys = (np.arange(rows, dtype=np.int64)[:, None] * stride + ordered.ids).ravel()
    first = np.zeros(keys.shape, dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    repeated = ~first.reshape(ordered.ids.shape) & ordered.valid
    return ordered.without(repeated), _changed(ordered, repeated)


def cap_per_category(
    candidates: Candidates, categories: np.ndarray, cap: int
) -> tuple[Candidates, np.ndarray]:
    """Keep at most ``cap`` items of each category per row, the best-scored ones (category 0 = unknown, uncapped)."""
    ordered = candidates.best_first()
    shape = ordered.ids.shape
    codes = np.where(ordered.valid, categories[np.maximum(ordered.ids, 0)], 0).astype(np.int64)
    stride = int(codes.max(initial=0)) + 1
    keys = (np.arange(shape[0], dtype=np.int64)[:, None] * stride + codes).ravel()
    order = np.argsort(keys, kind="stable")  # stable: within a (row, category) group, best score first
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    group_start = np.repeat(starts, np.diff(np.concatenate([starts, [len(keys)]])))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - group_start
    over = (rank.reshape(shape) >= cap) & (codes > 0) & ordered.valid
    return ordered.without(over), _changed(ordered, over)


def top_k(candidates: Candidates, k: int) -> Candidates:
    """The ``k`` best of each row (fewer where the row has fewer)."""
    return candidates.best_first(k)


@dataclass
class RuleLog:
    """Which rules changed which rows of a batch, in the order they ran."""

    rows: int
    names: list[str] = field(default_factory=list)
    changed: list[np.ndarray] = field(default_factory=list)

    def record(self, name: str, changed: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Note that ``name`` changed the rows set in ``changed`` (given for ``rows`` of the batch, or all)."""
        full = np.zeros(self.rows, dtype=bool)
        if rows is None:
            full |= changed
        else:
            full[rows] = changed
        self.names.append(name)
        self.changed.append(full)

    def applied(self, row: int) -> list[str]:
        """Names of the rules that changed ``row``, once each, in order."""
        return list(dict.fromkeys(name for name, mask in zip(self.names, self.changed, strict=True) if mask[row]))


@dataclass(frozen=True)
class ItemRules:
    """A deployment's item rules compiled into arrays indexed by item model id (see :mod:`recplane.serving.spec`)."""

    exclude_seen: bool = True
    dedupe: bool = True
    blocked: np.ndarray | None = None  # bool [num_items]
    boosts: tuple[Boost, ...] = ()
    categories: np.ndarray | None = None  # int64 [num_items], 0 = unknown
    max_per_category: int | None = None

    @cached_property
    def blocked_count(self) -> int:
        """How many items blocks remove at most (for over-fetching); counted once, not per request."""
        return 0 if self.blocked is None else int(self.blocked.sum())

    def exclusions(
        self,
        candidates: Candidates,
        log: RuleLog,
        rows: np.ndarray,
        *,
        users: np.ndarray | None = None,
        interactions: UserInteractions | None = None,
        excluded: Sequence[np.ndarray] = (),
    ) -> Candidates:
        """Drop seen (when ``users`` and ``interactions`` are given), blocked and request-excluded items."""
        if self.exclude_seen and users is not None and interactions is not None:
            candidates, changed = exclude_seen(candidates, users, interactions)
            log.record("exclude_seen", changed, rows)
        if self.blocked is not None:
            candidates, changed = exclude_items(candidates, self.blocked)
            log.record("block", changed, rows)
        if excluded:
            candidates, changed = exclude_per_row(candidates, excluded)
            log.record("exclude", changed, rows)
        return candidates

    def reorder(self, candidates: Candidates, log: RuleLog, rows: np.ndarray) -> Candidates:
        """Boosts, dedupe and the category cap on final scores; returns the candidates best first."""
        for rule in self.boosts:
            candidates, changed = boost(candidates, rule)
            log.record("boost", changed, rows)
        if self.dedupe and candidates.has_duplicates():  # the index never repeats an item: usually nothing to do
            candidates, changed = dedupe(candidates)
            log.record("dedupe", changed, rows)
        if self.max_per_category is not None and self.categories is not None:
            candidates, changed = cap_per_category(candidates, self.categories, self.max_per_category)
            log.record("max_per_category", changed, rows)
        return candidates.best_first()


def item_categories(
    items: IdIndex, item_ids: pa.Array | pa.ChunkedArray, labels: pa.Array | pa.ChunkedArray
) -> tuple[np.ndarray, list[str]]:
    """Category code of every item model id (0 = unknown; code ``c`` is ``names[c - 1]``) and the sorted names."""
    ids = items.encode(item_ids)
    text = pc.cast(labels, pa.string())
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    names = pc.unique(text).drop_null()
    names = names.take(pc.sort_indices(names))
    codes = np.asarray(pc.index_in(text, value_set=names).fill_null(-1).to_numpy(zero_copy_only=False)) + 1
    categories = np.zeros(items.num_embeddings, dtype=np.int64)
    known = ids > 0
    categories[ids[known]] = codes[known]
    return categories, [str(name) for name in names.to_pylist()]


def compile_rules(
    rules: RulesSpec, items: IdIndex, categories: np.ndarray | None = None, names: Sequence[str] = ()
) -> ItemRules:
    """A deployment's rules as arrays over item model ids (raw item ids and category names resolved once)."""
    codes = {name: code for code, name in enumerate(names, start=1)}

    def items_of(raw: Sequence[Any], category: str | None = None) -> np.ndarray:
        mask = np.zeros(items.num_embeddings, dtype=bool)
        ids = items.encode(list(raw)) if raw else np.zeros(0, dtype=np.int64)
        mask[ids[ids > 0]] = True
        if category is not None and categories is not None and category in codes:
            mask |= categories == codes[category]
        mask[0] = False
        return mask

    blocked = items_of(rules.block_items)
    for category in rules.block_categories:
        blocked |= items_of([], category)
    boosts = tuple(Boost(items_of(b.items, b.category), b.multiply, b.add) for b in rules.boosts)
    return ItemRules(
        exclude_seen=rules.exclude_seen,
        dedupe=rules.dedupe,
        blocked=blocked if blocked.any() else None,
        boosts=boosts,
        categories=categories,
        max_per_category=rules.max_per_category,
    )
