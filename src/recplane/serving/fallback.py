"""Candidates for users the retrieval model cannot serve: unknown users, and cold ones when the spec says so.

``popularity`` serves the items with the most interactions in the retrieval model's training data (counted
once, when the bundle was written). ``content`` serves items like the request's context: the nearest items (by
the retrieval model's item vectors, through the same ANN index) to ``context["item_id"]``, else the most popular
items of ``context["category"]`` (with the deployment's item categories), else popularity. Every answer says
which one it got and why, e.g. ``"popularity: unknown user"`` — the response's ``fallback`` field.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recplane.serving.index import AnnIndex
from recplane.serving.rules import Candidates
from recplane.training.bundle import IdIndex

__all__ = ["Fallback"]


class Fallback:
    """Fallback candidates over the retrieval model's item ids (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        item_counts: np.ndarray,
        *,
        items: IdIndex,
        index: AnnIndex | None = None,
        item_vectors: np.ndarray | None = None,
        categories: np.ndarray | None = None,
        category_names: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self.counts = np.asarray(item_counts, dtype=np.float32)
        # Every real item (ids 1..N), most interactions first; ties by id.
        self.order = np.argsort(-self.counts[1:], kind="stable").astype(np.int64) + 1
        self.items, self.index, self.item_vectors = items, index, item_vectors
        self.categories = categories
        self.category_codes = {name: code for code, name in enumerate(category_names, start=1)}
        self._by_category: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def candidates(
        self, contexts: Sequence[Mapping[str, Any]], why: Sequence[str], width: int
    ) -> tuple[Candidates, list[str]]:
        """``width`` candidates for each fallback row and its label (``"<kind>: <why>"``)."""
        rows = len(contexts)
        ids = np.full((rows, width), -1, dtype=np.int64)
        scores = np.full((rows, width), -np.inf, dtype=np.float32)
        labels = [f"popularity: {reason}" for reason in why]
        popular = self.order[:width]
        ids[:, : len(popular)] = popular
        scores[:, : len(popular)] = self.counts[popular]
        if self.kind == "content":
            self._content(contexts, why, ids, scores, labels)
        return Candidates.of(ids, scores), labels

    def _content(
        self,
        contexts: Sequence[Mapping[str, Any]],
        why: Sequence[str],
        ids: np.ndarray,
        scores: np.ndarray,
        labels: list[str],
    ) -> None:
        anchors = self.items.encode([context.get("item_id") for context in contexts])
        searchable = self.index is not None and self.item_vectors is not None
        similar = np.flatnonzero(anchors > 0) if searchable else np.zeros(0, dtype=np.int64)
        served = np.zeros(len(contexts), dtype=bool)
        served[similar] = True
        if len(similar):
            assert self.index is not None and self.item_vectors is not None
            found_scores, found = self.index.search(self.item_vectors[anchors[similar]], ids.shape[1] + 1)
            own = found == anchors[similar][:, None]  # an item is not its own recommendation
            found, found_scores = _drop_slots(found, found_scores, own, ids.shape[1])
            ids[similar], scores[similar] = found, found_scores
            for row in similar.tolist():
                labels[row] = f"content: {why[row]}, items like {contexts[row].get('item_id')!r}"
        for row, context in enumerate(contexts):
            if served[row] or "category" not in context:
                continue
            picked = self._popular_in(context["category"], ids.shape[1])
            if picked is not None:
                ids[row], scores[row] = -1, -np.inf
                ids[row, : len(picked)], scores[row, : len(picked)] = picked, self.counts[picked]
                labels[row] = f"content: {why[row]}, popular in category {context['category']!r}"

    def _popular_in(self, category: Any, width: int) -> np.ndarray | None:
        """The ``width`` most popular items of a category (None when the category is unknown)."""
        code = self.category_codes.get(str(category))
        if code is None or self.categories is None:
            return None
        with self._lock:
            ranked = self._by_category.get(code)
            if ranked is None:
                ranked = self.order[self.categories[self.order] == code]
                self._by_category[code] = ranked
        return ranked[:width]


def _drop_slots(
    ids: np.ndarray, scores: np.ndarray, drop: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the ``drop`` slots removed (the rest shifted left), cut to ``width``."""
    keep_first = np.argsort(drop, axis=1, kind="stable")
    ids = np.take_along_axis(np.where(drop, -1, ids), keep_first, axis=1)[:, :width]
    scores = np.take_along_axis(np.where(drop, -np.inf, scores), keep_first, axis=1)[:, :width]
    return ids, scores.astype(np.float32)
