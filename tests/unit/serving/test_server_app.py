"""The serving app in-process (httpx ASGITransport) over a real registry and Recommender: routes, errors, auth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.fixtures.serve import register_versions

from recplane.auth import create_token
from recplane.config import Settings
from recplane.runtime import Runtime
from recplane.serving.server import ServingApp
from recplane.serving.spec import load_deployment


def _spec(**overrides: Any) -> Any:
    return load_deployment({"name": "home", "retrieval": {"name": "mf"}, "k": 5, **overrides})


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    with Runtime(settings) as opened:
        register_versions(opened.registry, "mf", 1)
        yield opened


def _started(app: ServingApp, ready: bool = True) -> ServingApp:
    app.start()
    if ready:
        assert app.swapper.wait_ready(60), app.swapper.last_error
    return app


@pytest.fixture
def app(runtime: Runtime) -> Iterator[ServingApp]:
    made = _started(ServingApp(_spec(), runtime, dev_mode=True))
    yield made
    made.stop()


async def _send(app: ServingApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as client:
        return await client.request(method, path, **kwargs)


def call(app: ServingApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return asyncio.run(_send(app, method, path, **kwargs))


def test_recommend_answers_top_k_with_versions_and_a_request_id(app: ServingApp) -> None:
    response = call(app, "POST", "/v1/recommend", json={"user_id": 1})
    assert response.status_code == 200
    body = response.json()
    assert len(body["items"]) == 5  # the deployment's k
    assert body["model_versions"] == {"retrieval": "mf:1"}
    assert body["fallback"] is None and "exclude_seen" in body["rules"]
    assert body["request_id"] == response.headers["x-request-id"] and len(body["request_id"]) == 32
    assert {"retrieval", "rules", "total"} <= set(body["timings_ms"])
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_a_caller_request_id_is_kept_and_exclusions_apply(app: ServingApp) -> None:
    first = call(app, "POST", "/v1/recommend", json={"user_id": 1, "k": 3}).json()
    top = first["items"][0]["item_id"]
    response = call(
        app,
        "POST",
        "/v1/recommend",
        json={"user_id": 1, "k": 3, "exclude": [top]},
        headers={"X-Request-Id": "trace-42"},
    )
    assert response.json()["request_id"] == "trace-42"
    assert top not in [item["item_id"] for item in response.json()["items"]]


def test_unknown_user_gets_the_declared_fallback_flagged(app: ServingApp) -> None:
    body = call(app, "POST", "/v1/recommend", json={"user_id": "nobody", "k": 4}).json()
    assert body["fallback"] == "popularity: unknown user"
    assert len(body["items"]) == 4
    assert 'recplane_serving_fallbacks_total{fallback="popularity"} 1.0' in call(app, "GET", "/metrics").text


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, ["user_id"]),
        ({"user_id": 1, "k": 0}, ["k"]),
        ({"user_id": 1, "k": 1001}, ["k"]),
        ({"user_id": [1], "k": "many"}, ["user_id.str", "user_id.int", "k"]),
        ({"user_id": 1, "context": "phone", "colour": "red"}, ["context", "colour"]),
    ],
)
def test_malformed_recommend_bodies_are_422_with_field_errors(
    app: ServingApp, payload: dict[str, Any], fields: list[str]
) -> None:
    response = call(app, "POST", "/v1/recommend", json=payload)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert [entry["field"] for entry in error["details"]["fields"]] == fields


def test_a_body_that_is_not_json_is_422(app: ServingApp) -> None:
    response = call(app, "POST", "/v1/recommend", content=b"{user_id: 1")
    assert response.status_code == 422
    assert "JSON" in response.json()["error"]["message"]


def test_score_ranks_the_given_candidates(app: ServingApp) -> None:
    response = call(app, "POST", "/v1/score", json={"user_id": 1, "item_ids": [1, 5, 9, 13]})
    assert response.status_code == 200
    items = response.json()["items"]
    assert sorted(item["item_id"] for item in items) == [1, 5, 9, 13]
    assert [item["score"] for item in items] == sorted((item["score"] for item in items), reverse=True)
    empty = call(app, "POST", "/v1/score", json={"user_id": 1, "item_ids": []})
    assert empty.status_code == 422 and empty.json()["error"]["details"]["fields"][0]["field"] == "item_ids"
    huge = call(app, "POST", "/v1/score", json={"user_id": 1, "item_ids": list(range(10_001))})
    assert huge.status_code == 422


def test_unknown_routes_and_methods_answer_in_the_error_envelope(app: ServingApp) -> None:
    missing = call(app, "GET", "/v2/recommend")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = call(app, "GET", "/v1/recommend")
    assert wrong.status_code == 405 and "POST" in wrong.json()["error"]["message"]


def test_openapi_documents_the_bodies(app: ServingApp) -> None:
    document = call(app, "GET", "/openapi.json").json()
    assert {"/v1/recommend", "/v1/score", "/v1/feedback"} <= set(document["paths"])
    k = document["components"]["schemas"]["RecommendBody"]["properties"]["k"]
    bounds = {key: value for option in k["anyOf"] for key, value in option.items()}
    assert (bounds["minimum"], bounds["maximum"]) == (1, 1000)
    assert document["components"]["schemas"]["ScoreBody"]["properties"]["item_ids"]["maxItems"] == 10_000


def test_deployment_and_reload_report_the_versions(app: ServingApp) -> None:
    described = call(app, "GET", "/v1/deployment").json()
    assert described["deployment"]["retrieval"]["alias"] == "production"
    assert described["model_versions"] == {"retrieval": "mf:1"} and described["pinned"] == {"retrieval": 1}
    reloaded = call(app, "POST", "/v1/admin/reload")
    assert reloaded.status_code == 200 and reloaded.json() == {"model_versions": {"retrieval": "mf:1"}}


def test_metrics_show_requests_stages_batches_and_model_versions(app: ServingApp) -> None:
    for user in range(5):
        call(app, "POST", "/v1/recommend", json={"user_id": user})
    text = call(app, "GET", "/metrics").text
    assert 'recplane_serving_requests_total{route="/v1/recommend",status="200"} 5.0' in text
    assert 'recplane_serving_stage_duration_seconds_count{models="retrieval=mf:1",stage="retrieval"} 5.0' in text
    assert 'recplane_serving_request_duration_seconds_count{models="retrieval=mf:1",route="/v1/recommend"}' in text
    assert "recplane_serving_batch_size_count" in text
    assert 'recplane_serving_model_info{model="mf",role="retrieval",version="1"} 1.0' in text
    assert 'recplane_serving_swaps_total{result="ok"} 1.0' in text


def test_feedback_needs_impression_logging(app: ServingApp) -> None:
    response = call(app, "POST", "/v1/feedback", json={"request_id": "r", "item_id": 1, "event": "click"})
    assert response.status_code == 404 and "logging.impressions" in response.json()["error"]["message"]
    bad = call(app, "POST", "/v1/feedback", json={"request_id": "r", "item_id": 1, "event": "Click!"})
    assert bad.status_code == 422


def test_tokens_are_required_outside_dev_mode(runtime: Runtime) -> None:
    app = _started(ServingApp(_spec(), runtime))
    try:
        assert call(app, "POST", "/v1/recommend", json={"user_id": 1}).status_code == 401
        wrong = call(app, "POST", "/v1/recommend", json={"user_id": 1}, headers={"Authorization": "Bearer rp_nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthenticated"
        secret = create_token(runtime.catalog, "recsys").secret
        good = call(app, "POST", "/v1/recommend", json={"user_id": 1}, headers={"Authorization": f"Bearer {secret}"})
        assert good.status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert call(app, "GET", open_path).status_code == 200
    finally:
        app.stop()


def test_a_deployment_whose_model_cannot_load_is_not_ready(runtime: Runtime) -> None:
    app = _started(ServingApp(_spec(retrieval={"name": "no_such_model"}), runtime, dev_mode=True), ready=False)
    try:
        deadline = time.monotonic() + 10
        while app.swapper.last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        ready = call(app, "GET", "/readyz")
        assert ready.status_code == 503 and "no_such_model" in ready.json()["last_error"]
        assert call(app, "GET", "/healthz").status_code == 200
        refused = call(app, "POST", "/v1/recommend", json={"user_id": 1})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "not_ready"
    finally:
        app.stop()


def test_overload_is_shed_fast_with_503_and_the_app_keeps_serving(runtime: Runtime) -> None:
    app = _started(ServingApp(_spec(serving={"max_inflight": 2, "max_batch": 1}), runtime, dev_mode=True))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as client:
            calls = [client.post("/v1/recommend", json={"user_id": user % 40}) for user in range(60)]
            return list(await asyncio.gather(*calls))

    try:
        statuses = [response.status_code for response in asyncio.run(burst())]
        assert set(statuses) == {200, 503} and statuses.count(200) >= 2
        shed = [response for response in asyncio.run(burst()) if response.status_code == 503]
        assert shed and shed[0].json()["error"]["code"] == "load_shed" and shed[0].headers["retry-after"] == "1"
        assert call(app, "POST", "/v1/recommend", json={"user_id": 1}).status_code == 200
        assert "recplane_serving_shed_total" in call(app, "GET", "/metrics").text
    finally:
        app.stop()


def test_a_body_request_id_is_echoed_and_wins_over_the_header(app: ServingApp) -> None:
    response = call(
        app, "POST", "/v1/recommend", json={"user_id": 1, "request_id": "order-9/a"}, headers={"X-Request-Id": "h-1"}
    )
    assert response.json()["request_id"] == response.headers["x-request-id"] == "order-9/a"
    scored = call(app, "POST", "/v1/score", json={"user_id": 1, "item_ids": [1, 5], "request_id": "s-1"})
    assert scored.json()["request_id"] == scored.headers["x-request-id"] == "s-1"
    refused = call(app, "POST", "/v1/recommend", json={"user_id": 1, "request_id": "two words"})
    assert refused.status_code == 422
    assert [entry["field"] for entry in refused.json()["error"]["details"]["fields"]] == ["request_id"]


@pytest.mark.parametrize("header", [b"x" * 129, b"has space", "\u00fcn\u00ef".encode("latin-1")])
def test_an_unusable_request_id_header_is_replaced_by_a_generated_id(app: ServingApp, header: bytes) -> None:
    response = call(app, "POST", "/v1/recommend", json={"user_id": 1}, headers={"X-Request-Id": header})
    assert response.status_code == 200
    assert response.json()["request_id"] == response.headers["x-request-id"] != header.decode("latin-1")
    assert len(response.json()["request_id"]) == 32


def test_timings_show_the_queue_wait_and_the_stage_histogram_records_it(app: ServingApp) -> None:
    body = call(app, "POST", "/v1/recommend", json={"user_id": 2}).json()
    assert set(body["timings_ms"]) == {"features", "retrieval", "ranking", "rules", "queue", "total"}
    assert 0 <= body["timings_ms"]["queue"] <= body["timings_ms"]["total"]
    text = call(app, "GET", "/metrics").text
    assert 'recplane_serving_stage_duration_seconds_count{models="retrieval=mf:1",stage="queue"} 1.0' in text
