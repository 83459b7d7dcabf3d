"""Fallback candidates: popularity from training counts, items like the context's item, popular in its category."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recplane.serving.fallback import Fallback
from recplane.serving.index import build_ann_index
from recplane.training.bundle import IdIndex

ITEMS = IdIndex(pa.array([10, 20, 30, 40, 50], pa.int64()))  # model ids 1..5
COUNTS = np.array([0, 3, 9, 1, 9, 0])  # per model id; ties keep id order
VECTORS = np.array(
    [[0, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], dtype=np.float32
)  # row = model id, row 0 padding
CATEGORIES = np.array([0, 1, 1, 2, 2, 2])  # "a" = 1, "b" = 2


def fallback(kind: str) -> Fallback:
    index = build_ann_index(VECTORS[1:], "exact", ids=np.arange(1, 6))
    return Fallback(
        kind,
        COUNTS,
        items=ITEMS,
        index=index,
        item_vectors=VECTORS,
        categories=CATEGORIES,
        category_names=["a", "b"],
    )


def test_popularity_serves_the_most_interacted_items_and_says_why() -> None:
    candidates, labels = fallback("popularity").candidates([{}, {"item_id": 10}], ["unknown user", "cold user"], 3)
    assert candidates.ids.tolist() == [[2, 4, 1], [2, 4, 1]]
    assert candidates.scores[0].tolist() == [9.0, 9.0, 3.0]
    assert labels == ["popularity: unknown user", "popularity: cold user"]


def test_content_serves_items_nearest_to_the_context_item_without_the_item_itself() -> None:
    candidates, labels = fallback("content").candidates([{"item_id": 10}], ["unknown user"], 2)
    assert candidates.ids.tolist() == [[2, 5]]  # nearest to item 10 (id 1) by inner product, itself left out
    np.testing.assert_allclose(candidates.scores[0], [0.9, 0.7], rtol=1e-6)
    assert labels == ["content: unknown user, items like 10"]


def test_content_serves_the_most_popular_items_of_the_context_category() -> None:
    candidates, labels = fallback("content").candidates([{"category": "b"}, {"category": "zzz"}], ["x", "y"], 5)
    assert candidates.ids[0].tolist() == [4, 3, 5, -1, -1]
    assert labels[0] == "content: x, popular in category 'b'"
    # An unknown category (and an unknown item) fall back to plain popularity, which the label says.
    assert candidates.ids[1].tolist() == [2, 4, 1, 3, 5] and labels[1] == "popularity: y"
