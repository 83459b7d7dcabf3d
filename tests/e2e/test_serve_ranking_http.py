"""`recplane serve` as a real process over a deployment WITH a ranker (a trained, registered MF retrieves, a
DeepFM ranks): ranking timings and the ranker's version in answers, `/v1/score` ranking by the DeepFM's own
probabilities, caller request ids echoed and logged so feedback joins on them, and the queue wait in the timings
and the stage histogram."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.fixtures.bundles import interactions
from tests.fixtures.serve import ServeProcess, wait_for_logged_rows

from recplane import Client
from recplane.training.bundle import load_bundle

pytestmark = pytest.mark.e2e

RATINGS = {
    "name": "ratings",
    "event_time": "ts",
    "columns": {"user_id": "int64", "item_id": "int64", "rating": "float32", "ts": "timestamp"},
}
DEPLOYMENT = {
    "name": "shop",
    "retrieval": {"name": "mf", "alias": "production"},
    "ranking": {"name": "deepfm", "alias": "production"},
    "candidates": 20,
    "k": 5,
    "logging": {"impressions": "served", "flush_seconds": 0.1},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with ratings, and an MF and a DeepFM trained on them, each registered as version 1 `production`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("serve-ranked") / "home"
    trained = {
        "mf": {"model": "mf", "epochs": 3, "batch_size": 32, "lr": 0.05, "params": {"dim": 8}},
        "deepfm": {"model": "deepfm", "epochs": 2, "batch_size": 32, "params": {"embedding_size": 4}},
    }
    with Client(home=folder) as client:
        client.create_dataset(RATINGS)
        client.replace_dataset("ratings", interactions())
        for name, train in trained.items():
            run = client.train({"dataset": "ratings", "train": {**train, "patience": None}}).run
            client.register_model(name, run_id=run.id)
            client.set_model_alias(name, "production", 1)
    torch.set_num_threads(threads)
    yield folder


@pytest.fixture(scope="module")
def service(home: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(home, DEPLOYMENT).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def ranker(home: Path) -> Any:
    """The registered DeepFM's bundle, loaded here to score pairs independently of the service."""
    with Client(home=home) as client:
        version = client.get_model_version("deepfm", 1)
    return load_bundle(Path(version.artifact_uri.removeprefix("file://")))


def post(service: ServeProcess, route: str, payload: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{service.url}{route}", json=payload, timeout=10, **kwargs)


def test_recommend_answers_through_the_ranker_with_its_version_and_timings(service: ServeProcess) -> None:
    response = post(service, "/v1/recommend", {"user_id": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_versions"] == {"retrieval": "mf:1", "ranking": "deepfm:1"}
    assert body["fallback"] is None and len(body["items"]) == 5
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(0.0 < score < 1.0 for score in scores)  # probabilities
    timings = body["timings_ms"]
    assert set(timings) == {"features", "retrieval", "ranking", "rules", "queue", "total"}
    assert timings["ranking"] > 0 and timings["queue"] >= 0
    assert timings["total"] >= timings["retrieval"] + timings["ranking"] + timings["queue"]


def test_score_ranks_the_given_candidates_by_the_rankers_probabilities(service: ServeProcess, ranker: Any) -> None:
    candidates = [3, 8, 11, 17, 22, 30, 39]
    body = post(service, "/v1/score", {"user_id": 5, "item_ids": candidates}).json()
    assert body["model_versions"] == {"retrieval": "mf:1", "ranking": "deepfm:1"}
    probabilities = ranker.rank(ranker.users.encode([5] * len(candidates)), ranker.items.encode(candidates))["label"]
    order = np.argsort(-probabilities, kind="stable")
    assert [item["item_id"] for item in body["items"]] == [candidates[i] for i in order]
    np.testing.assert_allclose([item["score"] for item in body["items"]], probabilities[order], rtol=1e-5)
    assert body["timings_ms"]["ranking"] > 0 and "queue" in body["timings_ms"]


def test_a_callers_request_id_is_echoed_logged_and_joined_by_feedback(service: ServeProcess, home: Path) -> None:
    response = post(service, "/v1/recommend", {"user_id": 7, "k": 3, "request_id": "checkout-7:a1"})
    served = response.json()
    assert served["request_id"] == response.headers["x-request-id"] == "checkout-7:a1"
    scored = post(service, "/v1/score", {"user_id": 7, "item_ids": [1, 2], "request_id": "score-7"})
    assert scored.json()["request_id"] == scored.headers["x-request-id"] == "score-7"
    # The body's id wins over the header's; without either the server makes one.
    both = post(service, "/v1/recommend", {"user_id": 7, "request_id": "body-id"}, headers={"X-Request-Id": "hdr"})
    assert both.json()["request_id"] == "body-id"
    assert len(post(service, "/v1/recommend", {"user_id": 7}).json()["request_id"]) == 32
    clicked = served["items"][0]["item_id"]
    feedback = post(service, "/v1/feedback", {"request_id": "checkout-7:a1", "item_id": clicked, "event": "click"})
    assert feedback.status_code == 202
    with Client(home=home) as client:
        impressions = wait_for_logged_rows(client, "served", "checkout-7:a1")
        clicks = wait_for_logged_rows(client, "served_feedback", "checkout-7:a1")
        assert wait_for_logged_rows(client, "served", "score-7").column("route").to_pylist() == ["score"]
    assert impressions.column("items").to_pylist() == [[str(item["item_id"]) for item in served["items"]]]
    assert clicks.column("item_id").to_pylist() == [str(clicked)]


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "", "tab\there", "é"])
def test_an_invalid_request_id_is_a_422_naming_the_field(service: ServeProcess, bad: str) -> None:
    for route, payload in (("/v1/recommend", {"user_id": 5}), ("/v1/score", {"user_id": 5, "item_ids": [1]})):
        response = post(service, route, {**payload, "request_id": bad})
        assert response.status_code == 422
        assert [entry["field"] for entry in response.json()["error"]["details"]["fields"]] == ["request_id"]


def test_the_stage_histogram_records_ranking_and_the_queue_wait(service: ServeProcess) -> None:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    versions = 'models="ranking=deepfm:1,retrieval=mf:1"'
    for stage in ("ranking", "queue"):
        assert f'recplane_serving_stage_duration_seconds_count{{{versions},stage="{stage}"}}' in text
