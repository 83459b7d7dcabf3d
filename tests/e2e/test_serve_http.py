"""`recplane serve` as a real process over a trained, registered MF: answers, errors, shedding, logs, hot swap.

One service runs for the module (the models train once); the tests run in file order and the last one stops it
with SIGTERM to check the graceful shutdown.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from tests.fixtures.serve import ServeProcess, click_rows, wait_for_logged_rows

from recplane import Client

pytestmark = pytest.mark.e2e

DEPLOYMENT = {
    "name": "home",
    "retrieval": {"name": "mf", "alias": "production"},
    "k": 5,
    "logging": {"impressions": "served", "flush_seconds": 0.1},
    "serving": {"max_batch": 8, "max_inflight": 8, "swap_poll_seconds": 0.2},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with a clicks dataset, one trained MF run, and version 1 of model `mf` as `production`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("serve") / "home"
    with Client(home=folder) as client:
        client.create_dataset(
            {
                "name": "clicks",
                "event_time": "ts",
                "columns": {"user_id": "int64", "item_id": "int64", "ts": "timestamp"},
            }
        )
        client.ingest("clicks", click_rows())
        trained = client.train(
            {
                "dataset": "clicks",
                "train": {"model": "mf", "epochs": 2, "batch_size": 64, "lr": 0.05, "params": {"dim": 8}},
            }
        )
        client.register_model("mf", run_id=trained.run.id)
        client.set_model_alias("mf", "production", 1)
    torch.set_num_threads(threads)
    yield folder


@pytest.fixture(scope="module")
def service(home: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(home, DEPLOYMENT).start()
    yield process
    process.stop()


def recommend(service: ServeProcess, payload: dict[str, Any], client: httpx.Client | None = None) -> httpx.Response:
    poster = client or httpx
    return poster.post(f"{service.url}/v1/recommend", json=payload, timeout=10)  # type: ignore[attr-defined]


def test_known_user_gets_items_with_model_versions(service: ServeProcess) -> None:
    response = recommend(service, {"user_id": 3, "k": 4})
    assert response.status_code == 200
    body = response.json()
    assert len(body["items"]) == 4 and body["fallback"] is None
    assert body["model_versions"] == {"retrieval": "mf:1"}
    assert body["request_id"] == response.headers["x-request-id"]


def test_unknown_user_gets_the_flagged_fallback(service: ServeProcess) -> None:
    body = recommend(service, {"user_id": 123456}).json()
    assert body["fallback"] == "popularity: unknown user" and len(body["items"]) == 5


def test_malformed_request_is_422_with_field_errors(service: ServeProcess) -> None:
    response = recommend(service, {"user_id": 3, "k": 5000, "contxt": {}})
    assert response.status_code == 422
    fields = {entry["field"] for entry in response.json()["error"]["details"]["fields"]}
    assert fields == {"k", "contxt"}


def test_impressions_and_feedback_land_in_datasets_and_join(service: ServeProcess, home: Path) -> None:
    served = recommend(service, {"user_id": 5, "k": 3, "context": {"page": "home"}}).json()
    clicked = served["items"][1]["item_id"]
    feedback = httpx.post(
        f"{service.url}/v1/feedback",
        timeout=10,
        json={"request_id": served["request_id"], "item_id": clicked, "event": "click"},
    )
    assert feedback.status_code == 202 and feedback.json()["dataset"] == "served_feedback"
    with Client(home=home) as client:
        impressions = wait_for_logged_rows(client, "served", served["request_id"])
        clicks = wait_for_logged_rows(client, "served_feedback", served["request_id"])
    row = impressions.to_pylist()[0]
    assert row["items"] == [str(item["item_id"]) for item in served["items"]]
    assert row["model_versions"] == [("retrieval", "mf:1")] and row["context"] == '{"page":"home"}'
    db = duckdb.connect()
    db.register("impressions", impressions)
    db.register("clicks", clicks)
    joined = db.sql("""
        SELECT c.event, list_position(i.items, c.item_id) - 1 AS position
        FROM clicks c JOIN impressions i USING (request_id)
    """).fetchall()
    assert joined == [("click", 1)]


def test_metrics_expose_traffic_stages_and_versions(service: ServeProcess) -> None:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    assert 'recplane_serving_requests_total{route="/v1/recommend",status="200"}' in text
    assert 'recplane_serving_requests_total{route="/v1/recommend",status="422"} 1.0' in text
    assert 'stage="retrieval"' in text and 'models="retrieval=mf:1"' in text
    assert "recplane_serving_batch_size_bucket" in text
    assert 'recplane_serving_logged_rows_total{dataset="served",outcome="written"}' in text


def test_overload_is_shed_with_fast_503s_and_the_service_survives(service: ServeProcess) -> None:
    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            calls = [client.post(f"{service.url}/v1/recommend", json={"user_id": n % 60}) for n in range(150)]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(burst())
    statuses = {response.status_code for response in responses}
    assert statuses == {200, 503}
    shed = next(response for response in responses if response.status_code == 503)
    assert shed.json()["error"]["code"] == "load_shed" and shed.headers["retry-after"] == "1"
    assert service.alive
    assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
    assert recommend(service, {"user_id": 3}).status_code == 200


def test_hot_swap_under_load_fails_no_request(service: ServeProcess, home: Path) -> None:
    stop = threading.Event()
    seen: list[list[tuple[int, str]]] = [[] for _ in range(4)]

    def hammer(worker: int) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                response = recommend(service, {"user_id": worker * 7 % 60}, client)
                version = (
                    response.json().get("model_versions", {}).get("retrieval", "")
                    if response.status_code == 200
                    else response.text
                )
                seen[worker].append((response.status_code, version))

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(hammer, worker) for worker in range(4)]
        time.sleep(0.5)
        with Client(home=home) as client:
            version = client.register_model("mf", run_id=client.get_model_version("mf", 1).run_id)
            client.set_model_alias("mf", "production", version.version)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(s and s[-1][1] == "mf:2" for s in seen):
            time.sleep(0.05)
        time.sleep(0.3)  # keep the load on after the swap
        stop.set()
        for worker in workers:
            worker.result()

    answers = [answer for per_worker in seen for answer in per_worker]
    failures = [answer for answer in answers if answer[0] != 200]
    assert not failures, failures[:5]
    assert len(answers) > 50
    for per_worker in seen:  # each client saw version 1, then version 2, never back
        versions = [version for _, version in per_worker]
        assert versions[0] == "mf:1" and versions[-1] == "mf:2"
        assert versions == sorted(versions)
    described = httpx.get(f"{service.url}/v1/deployment", timeout=10).json()
    assert described["model_versions"] == {"retrieval": "mf:2"}


def test_sigterm_drains_flushes_the_log_and_exits_cleanly(service: ServeProcess, home: Path) -> None:
    last = recommend(service, {"user_id": 9}).json()
    # uvicorn re-raises the signal once its graceful shutdown is done, so the status says "terminated".
    assert service.stop() in (0, -15)
    assert "Application shutdown complete" in service.log.read_text()
    with Client(home=home) as client:
        rows = client.read("served").to_pylist()
    assert last["request_id"] in {row["request_id"] for row in rows}
    assert "Logging" not in service.log.read_text()  # no impression batch failed to commit
