"""Recall-calibrated ANN indexes: the search parameter grows until recall@k reaches the target, and it persists."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.fixtures.bundles import clustered_vectors
from tests.fixtures.serve import register_versions

from recplane.config import Settings
from recplane.errors import InvalidInput, InvalidSpec
from recplane.runtime import Runtime
from recplane.serving.index import AnnIndex, build_ann_index, cached_index
from recplane.serving.server import ServingApp
from recplane.serving.spec import load_deployment

K = 50


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered items, calibration queries and held-out queries, all drawn from the same distribution."""
    drawn = clustered_vectors(20_000 + 256 + 300, 32, seed=3)
    return drawn[:20_000], drawn[20_000:20_256], drawn[20_256:]


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist(), strict=True)]))


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_calibrated_ivf_reaches_the_target_on_held_out_queries(data: tuple[np.ndarray, ...], target: float) -> None:
    items, calibration, held_out = data
    index = build_ann_index(items, "ivf", k=K, recall_target=target, queries=calibration)
    _, ids = index.search(held_out, K)
    assert recall(ids, exact_top(items, held_out, K)) >= target
    assert index.recall >= target and index.calibration is not None
    assert (index.calibration.target, index.calibration.k, index.calibration.queries) == (target, K, 256)
    assert index.calibration.source == "given"
    # Approximate for real: far fewer lists than an exhaustive scan.
    assert 1 <= index.nprobe <= index.index.nlist // 4


def test_a_higher_target_probes_at_least_as_many_lists(data: tuple[np.ndarray, ...]) -> None:
    items, calibration, _ = data
    low = build_ann_index(items, "ivf", k=K, recall_target=0.6, queries=calibration)
    high = build_ann_index(items, "ivf", k=K, recall_target=0.99, queries=calibration)
    assert low.nprobe < high.nprobe
    assert low.recall < high.recall


def test_a_recall_target_of_one_probes_every_list_and_answers_like_exact(data: tuple[np.ndarray, ...]) -> None:
    items, calibration, held_out = data
    index = build_ann_index(items, "ivf", k=K, recall_target=1.0, queries=calibration)
    assert index.nprobe == index.index.nlist and index.recall == 1.0
    scores, ids = index.search(held_out, K)
    want_scores, want_ids = build_ann_index(items, "exact").search(held_out, K)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert [set(row) for row in ids.tolist()] == [set(row) for row in want_ids.tolist()]


def test_calibrated_hnsw_reaches_the_target_on_held_out_queries(data: tuple[np.ndarray, ...]) -> None:
    items, calibration, held_out = data
    index = build_ann_index(items[:5_000], "hnsw", k=K, recall_target=0.95, queries=calibration)
    _, ids = index.search(held_out, K)
    assert recall(ids, exact_top(items[:5_000], held_out, K)) >= 0.95
    assert index.ef_search >= K and index.recall >= 0.95


def test_without_queries_item_vectors_with_noise_calibrate(data: tuple[np.ndarray, ...]) -> None:
    items, _, held_out = data
    index = build_ann_index(items, "ivf", k=K)
    assert index.calibration is not None and index.calibration.source == "item vectors + noise"
    _, ids = index.search(held_out, K)
    assert recall(ids, exact_top(items, held_out, K)) >= 0.95


def test_structureless_vectors_warn_that_ivf_degenerates(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20_000, 32)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="recplane.serving.index"):
        index = build_ann_index(vectors, "ivf", k=K, queries=rng.normal(size=(256, 32)))
    assert index.nprobe > index.index.nlist // 4 and index.recall >= 0.95
    assert "little cluster structure" in caplog.text and "index: exact" in caplog.text


@pytest.mark.parametrize("target", [0, -0.5, 1.01, float("nan")])
def test_an_invalid_recall_target_is_refused(tmp_path: Path, target: float) -> None:
    vectors = clustered_vectors(500, 8)
    with pytest.raises(InvalidInput, match=r"recall_target must be in \(0, 1\]"):
        build_ann_index(vectors, "ivf", recall_target=target)
    with pytest.raises(InvalidInput, match=r"recall_target must be in \(0, 1\]"):
        cached_index(tmp_path, vectors, "ivf", recall_target=target)
    with pytest.raises(InvalidSpec, match="recall_target"):
        load_deployment({"name": "home", "retrieval": {"name": "mf"}, "recall_target": target})


def test_calibration_queries_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"Calibration queries must be finite \[Q, 8\] vectors; got shape \[4, 3\]"):
        build_ann_index(clustered_vectors(500, 8), "ivf", queries=np.ones((4, 3)))


def test_the_sidecar_carries_the_parameter_and_recall_and_loads_back(
    tmp_path: Path, data: tuple[np.ndarray, ...]
) -> None:
    items, calibration, _ = data
    built = cached_index(tmp_path, items, "ivf", k=K, recall_target=0.9, queries=calibration)
    meta = json.loads((tmp_path / "ivf.json").read_text())
    assert meta["nprobe"] == built.nprobe and meta["recall"] == built.recall >= 0.9
    assert meta["calibration"]["target"] == 0.9 and meta["calibration"]["k"] == K
    loaded = AnnIndex.load(tmp_path / "ivf.faiss", items, recall_target=0.9, k=K)
    assert (loaded.nprobe, loaded.recall, loaded.calibration) == (built.nprobe, built.recall, built.calibration)
    assert loaded.describe() == built.describe()
    assert built.describe()["recall_target"] == 0.9 and built.describe()["nlist"] == built.index.nlist


def test_a_changed_target_or_k_rebuilds_and_the_same_settings_reload(
    tmp_path: Path, data: tuple[np.ndarray, ...]
) -> None:
    items, calibration, _ = data
    sidecar = tmp_path / "ivf.json"

    first = cached_index(tmp_path, items, "ivf", k=K, recall_target=0.8, queries=calibration)
    written = sidecar.stat().st_mtime_ns
    asked: list[int] = []

    def counting_queries() -> np.ndarray:
        asked.append(1)
        return calibration

    again = cached_index(tmp_path, items, "ivf", k=K, recall_target=0.8, queries=counting_queries)
    assert asked == [] and sidecar.stat().st_mtime_ns == written and again.nprobe == first.nprobe
    stricter = cached_index(tmp_path, items, "ivf", k=K, recall_target=0.99, queries=counting_queries)
    assert asked == [1] and stricter.nprobe > first.nprobe
    assert json.loads(sidecar.read_text())["calibration"]["target"] == 0.99
    wider = cached_index(tmp_path, items, "ivf", k=2 * K, recall_target=0.99, queries=counting_queries)
    assert asked == [1, 1] and json.loads(sidecar.read_text())["calibration"]["k"] == 2 * K
    assert wider.calibration is not None and wider.calibration.k == 2 * K


def test_exact_indexes_ignore_the_target_and_report_recall_one(tmp_path: Path) -> None:
    vectors = clustered_vectors(500, 8)
    exact = cached_index(tmp_path, vectors, "exact", recall_target=0.5)
    written = (tmp_path / "exact.json").stat().st_mtime_ns
    assert exact.recall == 1.0 and exact.describe() == {"kind": "exact", "items": 500, "recall": 1.0}
    cached_index(tmp_path, vectors, "exact", recall_target=0.9)
    assert (tmp_path / "exact.json").stat().st_mtime_ns == written


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    with Runtime(settings) as opened:
        register_versions(opened.registry, "mf", 1)
        yield opened


def test_the_deployment_route_reports_the_index_calibrated_on_user_vectors(runtime: Runtime) -> None:
    import asyncio

    import httpx

    spec = load_deployment(
        {"name": "home", "retrieval": {"name": "mf"}, "index": "ivf", "recall_target": 0.9, "candidates": 8}
    )
    app = ServingApp(spec, runtime, dev_mode=True)
    app.start()
    try:
        assert app.swapper.wait_ready(60), app.swapper.last_error

        async def get() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as client:
                return await client.get("/v1/deployment")

        described = asyncio.run(get()).json()
    finally:
        app.stop()
    index = described["index"]
    assert index["kind"] == "ivf" and index["recall_target"] == 0.9 and index["recall_k"] == 8
    assert index["recall"] >= 0.9 and 1 <= index["nprobe"] <= index["nlist"]
    assert index["calibration_source"] == "given"  # the retrieval model's user vectors, not stand-ins
    assert described["deployment"]["recall_target"] == 0.9
