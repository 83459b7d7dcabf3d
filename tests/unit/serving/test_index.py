"""The ANN index: exact search equals brute force, HNSW and IVF reach recall@k >= 0.95, indexes persist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.fixtures.bundles import clustered_vectors

from recplane.errors import InvalidInput
from recplane.serving.index import AnnIndex, build_ann_index, cached_index, resolve_kind


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), top


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist(), strict=True)]))


def test_exact_search_returns_the_brute_force_top_k_with_its_scores() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    index = build_ann_index(vectors, "exact", ids=np.arange(1, 501))
    scores, ids = index.search(queries, 25)
    want_scores, want_rows = brute_force(vectors, queries, 25)
    assert index.kind == "exact"
    np.testing.assert_array_equal(ids, want_rows + 1)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_reach_recall_095_against_exact(kind: str) -> None:
    # Queries from the items' own distribution, as a trained model's users are (calibration assumes so).
    drawn = clustered_vectors(20_200, 32, seed=3)
    vectors, queries = drawn[:20_000], drawn[20_000:]
    _, truth = brute_force(vectors, queries, 50)
    index = build_ann_index(vectors, kind)
    scores, ids = index.search(queries, 50)
    assert index.kind == kind
    assert recall(ids, truth) >= 0.95
    # Scores are the exact inner products of what was found, best first.
    np.testing.assert_allclose(scores, np.einsum("bkd,bd->bk", vectors[ids], queries), rtol=1e-4, atol=1e-4)
    assert bool(np.all(np.diff(scores, axis=1) <= 1e-5))


def test_auto_is_exact_for_small_catalogs_and_ivf_for_large_ones() -> None:
    assert resolve_kind("auto", 50_000) == "exact"
    assert resolve_kind("auto", 50_001) == "ivf"
    assert resolve_kind("hnsw", 10) == "hnsw"
    with pytest.raises(InvalidInput, match="Unknown index kind 'annoy'"):
        resolve_kind("annoy", 10)


def test_asking_for_more_than_the_catalog_fills_missing_slots_with_minus_one() -> None:
    vectors = np.eye(3, dtype=np.float32)
    _, ids = build_ann_index(vectors, "exact").search(np.ones((1, 3), dtype=np.float32), 3)
    assert sorted(ids[0].tolist()) == [0, 1, 2]
    with pytest.raises(InvalidInput, match=r"Queries must be \[B, 3\]"):
        build_ann_index(vectors, "exact").search(np.ones((1, 4), dtype=np.float32), 2)


def test_a_saved_index_loads_back_and_a_stale_one_is_rebuilt(tmp_path: Path) -> None:
    vectors = clustered_vectors(2_000, 8, seed=5)
    queries = clustered_vectors(10, 8, seed=6)
    built = cached_index(tmp_path, vectors, "hnsw")
    assert (tmp_path / "hnsw.faiss").is_file()
    loaded = AnnIndex.load(tmp_path / "hnsw.faiss", vectors)
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], built.search(queries, 10)[1])
    other = vectors * 2
    with pytest.raises(InvalidInput, match="built from other item vectors"):
        AnnIndex.load(tmp_path / "hnsw.faiss", other)
    rebuilt = cached_index(tmp_path, other, "hnsw")
    _, truth = brute_force(other, queries, 10)
    assert recall(rebuilt.search(queries, 10)[1], truth) >= 0.95


def test_searches_from_other_threads_use_the_serving_thread_count() -> None:
    # OpenMP's thread count is per thread: a server's worker thread must not search with every core.
    import threading

    import faiss

    from recplane.serving.index import set_search_threads

    vectors = np.random.default_rng(3).standard_normal((500, 8)).astype(np.float32)
    index = build_ann_index(vectors, "exact")
    set_search_threads(1)
    seen: list[int] = []

    def search() -> None:
        index.search(vectors[:2], 5)
        seen.append(faiss.omp_get_max_threads())

    worker = threading.Thread(target=search)
    worker.start()
    worker.join()
    assert seen == [1]
