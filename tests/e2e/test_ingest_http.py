"""The ingestion endpoint over real HTTP: backpressure (429 + Retry-After), size limit (413), NDJSON."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from tests.fixtures.server import ServerProcess

from recplane import Client

pytestmark = pytest.mark.e2e

SPEC = {"name": "clicks", "columns": {"user_id": {"type": "int64", "nullable": False}, "item_id": "int64"}}


def _rows(n: int, start: int = 0) -> list[dict[str, int]]:
    return [{"user_id": start + i, "item_id": i} for i in range(n)]


def test_full_queue_answers_429_with_retry_after_and_loses_nothing(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "home", dev=True, env={
        "RECPLANE_INGEST_QUEUE_MAX_ROWS": "100", "RECPLANE_GROUP_COMMIT_MAX_WAIT_MS": "300",
    })
    Client(server.url).create_dataset(SPEC)

    def post(index: int) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/datasets/clicks/events", json=_rows(100, index * 100),
                          headers={"Idempotency-Key": f"k{index}"}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(16)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}
    assert 429 in statuses, "a queue of 100 rows cannot hold 16 concurrent 100-row requests"
    throttled = next(r for r in responses if r.status_code == 429)
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.json()["error"]["code"] == "overloaded"
    committed = Client(server.url).read("clicks").num_rows
    assert committed == 100 * statuses.count(200)


def test_body_over_the_limit_is_413_and_ndjson_is_accepted(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "home", dev=True, env={"RECPLANE_MAX_REQUEST_BYTES": "2048"})
    Client(server.url).create_dataset(SPEC)
    url = f"{server.url}/v1/datasets/clicks/events"
    too_big = httpx.post(url, json=_rows(500), timeout=30)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "payload_too_large"

    body = b"\n".join(orjson.dumps(row) for row in _rows(3)) + b'\n{"user_id": "x"}\nnot json\n'
    answer = httpx.post(url, content=body, headers={"Content-Type": "application/x-ndjson"}, timeout=30).json()
    assert (answer["accepted"], answer["rejected"]) == (3, 2)
    reasons = [r["reason"] for r in answer["reasons"]]
    assert any("invalid JSON" in reason for reason in reasons)


def test_unknown_dataset_and_malformed_key_are_clear_errors(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "home", dev=True)
    response = httpx.post(f"{server.url}/v1/datasets/nope/events", json=_rows(1), timeout=30)
    assert response.status_code == 404
    assert "nope" in response.json()["error"]["message"]


def test_keys_arrow_bodies_and_their_errors_over_real_http(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    import pyarrow as pa

    from recplane.wire import ARROW_STREAM, table_to_ipc

    server = server_factory(tmp_path / "home", dev=True)
    Client(server.url).create_dataset(SPEC)
    url = f"{server.url}/v1/datasets/clicks/events"
    first = httpx.post(url, json=_rows(2), headers={"Idempotency-Key": "k-1"}, timeout=30).json()
    again = httpx.post(url, json=_rows(2), headers={"Idempotency-Key": "k-1"}, timeout=30).json()
    assert (again["duplicate"], again["version"]) == (True, first["version"])
    too_long = httpx.post(url, json=_rows(1), headers={"Idempotency-Key": "k" * 257}, timeout=30)
    assert too_long.status_code == 422
    assert too_long.json()["error"]["details"]["fields"][0]["field"] == "header.idempotency-key"
    table = pa.table({"user_id": pa.array([7, 8], pa.int64()), "item_id": pa.array([1, 2], pa.int64())})
    arrow = httpx.post(url, content=table_to_ipc(table), headers={"Content-Type": ARROW_STREAM}, timeout=30)
    assert arrow.json()["accepted"] == 2
    broken = httpx.post(url, content=b"not arrow", headers={"Content-Type": ARROW_STREAM}, timeout=30)
    assert broken.status_code == 422 and "Arrow IPC" in broken.json()["error"]["message"]
    assert Client(server.url).read("clicks").num_rows == 4
