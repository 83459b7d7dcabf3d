"""The lean ingestion path answers exactly as the FastAPI route it stands in for: success and every error class.

Each request goes once through the app as ``recplane server`` runs it (the lean path) and once through FastAPI's own
stack (middlewares, routing, dependencies, the declared route) of the same app, runtime and catalog.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from recplane.api import create_app
from recplane.api.fast_ingest import ingest_route_name
from recplane.auth import ADMIN, create_token
from recplane.config import Settings
from recplane.wire import ARROW_STREAM, table_to_ipc

SPEC = {
    "name": "clicks",
    "team": "ads",
    "columns": {"user_id": {"type": "int64", "nullable": False}, "item_id": "int64", "ts": "timestamp"},
}
URL = "/v1/datasets/clicks/events"
LIMIT = 4096


class Paths:
    """One app, reached through the lean path (``lean``) and through FastAPI's stack (``stack``)."""

    def __init__(self, app: FastAPI, lean: TestClient) -> None:
        self.app, self.lean = app, lean

        async def through_fastapi(scope: Scope, receive: Receive, send: Send) -> None:
            await FastAPI.__call__(app, scope, receive, send)

        self.stack = TestClient(through_fastapi)  # no lifespan: the lean client's runtime serves both
        runtime = app.state.runtime
        self.ads = {"Authorization": f"Bearer {create_token(runtime.catalog, 'ads').secret}"}
        self.search = {"Authorization": f"Bearer {create_token(runtime.catalog, 'search').secret}"}

    def both(self, method: str = "POST", url: str = URL, **kwargs: Any) -> tuple[Any, Any]:
        return self.lean.request(method, url, **kwargs), self.stack.request(method, url, **kwargs)


def make_paths(tmp_path: Path, **settings: Any) -> Iterator[Paths]:
    values = {"max_request_bytes": LIMIT, "group_commit_max_wait_ms": 2.0, "scheduler_loop": False,
              "pipelines_loop": False, **settings}
    app = create_app(Settings(home=tmp_path / "home", **values))
    with TestClient(app) as lean:
        app.state.runtime.datasets.create(SPEC, principal=ADMIN)
        yield Paths(app, lean)


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[Paths]:
    yield from make_paths(tmp_path)


def rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"user_id": start + i, "item_id": i, "ts": "2026-11-23T10:00:00Z"} for i in range(count)]


def assert_same(lean: Any, stack: Any, *, status: int, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Same status, JSON body (but ``ignore``d keys) and content headers on both paths; the lean body."""
    assert (lean.status_code, stack.status_code) == (status, status), (lean.text, stack.text)
    for header in ("content-type", "retry-after"):
        assert lean.headers.get(header) == stack.headers.get(header), header
    lean_body = {k: v for k, v in lean.json().items() if k not in ignore}
    stack_body = {k: v for k, v in stack.json().items() if k not in ignore}
    assert lean_body == stack_body
    return dict(lean.json())


def test_the_route_is_recognised_exactly_as_fastapi_matches_it() -> None:
    def scope(path: str, method: str = "POST", kind: str = "http") -> dict[str, Any]:
        return {"type": kind, "method": method, "path": path}

    assert ingest_route_name(scope("/v1/datasets/clicks/events")) == "clicks"
    assert ingest_route_name({**scope("/api/v1/datasets/a.b-c/events"), "root_path": "/api"}) == "a.b-c"
    for path in ("/v1/datasets//events", "/v1/datasets/events", "/v1/datasets/a/b/events",
                 "/v1/datasets/clicks/events/", "/v1/datasets/clicks", "/v2/datasets/clicks/events"):
        assert ingest_route_name(scope(path)) is None, path
    assert ingest_route_name(scope("/v1/datasets/clicks/events", method="GET")) is None
    assert ingest_route_name(scope("/v1/datasets/clicks/events", kind="websocket")) is None


def test_accepted_and_rejected_rows_answer_alike(paths: Paths) -> None:
    body = [*rows(3), {"user_id": None, "item_id": 1}, {"user_id": 9, "colour": "red"}]
    lean, stack = paths.both(json=body, headers=paths.ads)
    answer = assert_same(lean, stack, status=200, ignore=("batch_id", "version", "rejected_version"))
    assert (answer["accepted"], answer["rejected"], answer["duplicate"]) == (3, 2, False)
    assert [r["row"] for r in answer["reasons"]] == [3, 4]
    assert answer["version"] is not None and stack.json()["version"] is not None
    assert paths.app.state.runtime.datasets.read("clicks", principal=ADMIN).num_rows == 6


def test_a_repeated_idempotency_key_is_a_duplicate_on_either_path(paths: Paths) -> None:
    headers = {**paths.ads, "Idempotency-Key": "batch-1"}
    first = paths.lean.post(URL, json=rows(2), headers=headers)
    lean, stack = paths.both(json=rows(2), headers=headers)
    answer = assert_same(lean, stack, status=200)
    assert answer["duplicate"] and answer["version"] == first.json()["version"]
    assert paths.app.state.runtime.datasets.read("clicks", principal=ADMIN).num_rows == 2


def test_ndjson_and_arrow_bodies_answer_alike(paths: Paths) -> None:
    ndjson = b"\n".join(orjson.dumps(row) for row in rows(2)) + b"\nnot json\n"
    lean, stack = paths.both(content=ndjson, headers={**paths.ads, "Content-Type": "application/x-ndjson"})
    answer = assert_same(lean, stack, status=200, ignore=("batch_id", "version", "rejected_version"))
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    table = pa.table({"user_id": pa.array([1, 2], pa.int64()), "item_id": pa.array([3, 4], pa.int64())})
    arrow = {**paths.ads, "Content-Type": f"{ARROW_STREAM}; charset=binary"}
    lean, stack = paths.both(content=table_to_ipc(table), headers=arrow)
    assert_same(lean, stack, status=200, ignore=("batch_id", "version", "rejected_version"))


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("no token", 401, "unauthenticated"),
        ("wrong token", 401, "unauthenticated"),
        ("other team", 403, "forbidden"),
        ("unknown dataset", 404, "not_found"),
        ("declared too large", 413, "payload_too_large"),
        ("streamed too large", 413, "payload_too_large"),
        ("key too long", 422, "invalid_input"),
        ("empty key", 422, "invalid_input"),
        ("dead-letter dataset", 422, "invalid_input"),
        ("broken JSON", 422, "invalid_input"),
        ("broken Arrow", 422, "invalid_input"),
    ],
)
def test_each_error_answers_alike(paths: Paths, case: str, status: int, code: str) -> None:
    url, kwargs = URL, {"json": rows(1), "headers": paths.ads}
    if case == "no token":
        kwargs["headers"] = {}
    elif case == "wrong token":
        kwargs["headers"] = {"Authorization": "Bearer rp_wrong"}
    elif case == "other team":
        kwargs["headers"] = paths.search
    elif case == "unknown dataset":
        url = "/v1/datasets/nope/events"
    elif case == "declared too large":
        kwargs["json"] = rows(200)
    elif case == "key too long":
        kwargs["headers"] = {**paths.ads, "Idempotency-Key": "k" * 257}
    elif case == "empty key":
        kwargs["headers"] = {**paths.ads, "Idempotency-Key": ""}
    elif case == "dead-letter dataset":
        url = "/v1/datasets/clicks__rejected/events"
    elif case == "broken JSON":
        kwargs = {"content": b'[{"user_id": 1', "headers": paths.ads}
    elif case == "broken Arrow":
        kwargs = {"content": b"not arrow", "headers": {**paths.ads, "Content-Type": ARROW_STREAM}}
    if case == "streamed too large":  # chunked: no Content-Length to refuse it by
        lean = paths.lean.post(url, content=iter([b"[" + b" " * LIMIT, b"]"]), headers=paths.ads)
        stack = paths.stack.post(url, content=iter([b"[" + b" " * LIMIT, b"]"]), headers=paths.ads)
    else:
        lean, stack = paths.both(url=url, **kwargs)
    answer = assert_same(lean, stack, status=status)
    assert answer["error"]["code"] == code


def test_a_full_queue_is_429_with_retry_after_on_both_paths(tmp_path: Path) -> None:
    for paths in make_paths(tmp_path, ingest_queue_max_rows=10, group_commit_max_wait_ms=3000.0):
        runtime = paths.app.state.runtime
        waiting = runtime.ingestion.submit("clicks", rows(5), principal=ADMIN)  # lingers 3 s for company
        lean, stack = paths.both(json=rows(10, start=100), headers=paths.ads)
        answer = assert_same(lean, stack, status=429)
        assert answer["error"]["code"] == "overloaded" and int(lean.headers["retry-after"]) >= 1
        assert waiting.result(timeout=30).accepted == 5


def test_both_paths_count_requests_and_rows_in_the_same_metrics(paths: Paths) -> None:
    def sample(line_start: str) -> float:
        text = paths.lean.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))

    route = 'method="POST",route="/v1/datasets/{name}/events"'  # the exposition sorts labels by name
    ok = f'recplane_http_requests_total{{{route},status="200"}}'
    missing = f'recplane_http_requests_total{{{route},status="404"}}'
    timed = f'recplane_http_request_duration_seconds_count{{{route}}}'
    accepted = 'recplane_ingest_rows_total{dataset="clicks",outcome="accepted"}'
    failed = 'recplane_ingest_requests_total{dataset="nope",result="NotFound"}'
    before = [sample(name) for name in (ok, missing, timed, accepted, failed)]
    paths.both(json=rows(3), headers=paths.ads)
    paths.both(url="/v1/datasets/nope/events", json=rows(1), headers=paths.ads)
    after = [sample(name) for name in (ok, missing, timed, accepted, failed)]
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 2, 4, 6, 2]  # 4 timed: two requests per path


def test_other_methods_and_routes_still_reach_fastapi(paths: Paths) -> None:
    assert paths.lean.get(URL, headers=paths.ads).status_code == 405
    assert paths.lean.get("/v1/datasets/clicks", headers=paths.ads).json()["name"] == "clicks"
    assert "/v1/datasets/{name}/events" in paths.lean.get("/openapi.json").json()["paths"]


def test_dev_mode_needs_no_token_on_either_path(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path / "home", group_commit_max_wait_ms=2.0, scheduler_loop=False,
                              pipelines_loop=False), dev_mode=True)
    with TestClient(app) as lean:
        app.state.runtime.datasets.create(SPEC, principal=ADMIN)
        paths = Paths(app, lean)
        lean_answer, stack_answer = paths.both(json=rows(2))
        assert_same(lean_answer, stack_answer, status=200, ignore=("batch_id", "version"))
