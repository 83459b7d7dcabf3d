"""The serving part of ``recplane demo``: register the trained models, promote them, serve, query, predict.

Kept apart from :mod:`recplane.cli.demo` so each tour step stays short. The service runs as a real
``recplane serve`` process on a free loopback port (dev mode: loopback only), exactly as a user would start it,
and is stopped when the tour ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from recplane.cli.output import console, print_records
from recplane.client import Client
from recplane.errors import RecplaneError

if TYPE_CHECKING:
    from recplane.training.runs import RunRecord

__all__ = ["DEMO_DEPLOYMENT", "batch_predict", "register_and_promote", "serve_and_query"]

DEMO_DEPLOYMENT = "demo-home"
RETRIEVAL_MODEL, RANKING_MODEL = "demo-retrieval", "demo-ranker"
_READY_TIMEOUT_S = 120.0
_LATENCY_REQUESTS = 200


def register_and_promote(client: Client, retrieval: RunRecord, ranking: RunRecord) -> None:
    """Register both runs as model versions and move ``production`` to them, then show the alias history."""
    for name, run in ((RETRIEVAL_MODEL, retrieval), (RANKING_MODEL, ranking)):
        version = client.register_model(name, run_id=run.id, description=f"demo run {run.name}")
        client.set_model_alias(name, "production", version.version, reason="demo: first model of this name")
        headline = {k: round(v, 4) for k, v in version.metrics.items()
                    if k in ("test.ndcg@10", "test.auc") and isinstance(v, float)}
        console.print(f"registered [bold]{version.ref}[/] from run {run.id} ({version.model_class}, {headline}); "
                      f"production → v{version.version}")
    events = client.model_alias_history(RETRIEVAL_MODEL)
    print_records([e.model_dump() for e in events], ["alias", "from_version", "to_version", "actor", "reason", "at"],
                  title=f"recplane models history {RETRIEVAL_MODEL}")


def deployment_spec() -> dict[str, Any]:
    """Retrieval (MF + exact index) → DeepFM ranker on online features → rules → top 10; popularity fallback."""
    return {
        "name": DEMO_DEPLOYMENT,
        "retrieval": {"name": RETRIEVAL_MODEL, "alias": "production"},
        "ranking": {"name": RANKING_MODEL, "alias": "production"},
        "features": "demo_ranker",
        "candidates": 100,
        "k": 10,
        "rules": {"exclude_seen": True, "dedupe": True},
        "fallback": {"kind": "popularity"},
        "logging": {"impressions": "demo_impressions"},
    }



def serve_and_query(client: Client, home: Path) -> str:
    """Write the deployment, start ``recplane serve`` on it, send requests, print answers and latency.

    Returns the deployment file's path (for the "try this" panel)."""
    path = home / f"{DEMO_DEPLOYMENT}.yaml"
    path.write_text(yaml.safe_dump(deployment_spec(), sort_keys=False))
    console.print(f"deployment spec: {path}")
    port = _free_port()
    with _serving(home, path, port) as url, httpx.Client(base_url=url, timeout=10.0) as http:
        _show_answer(http, {"user_id": 1, "k": 5}, "known user 1")
        _show_answer(http, {"user_id": 999_999, "k": 5}, "unknown user (fallback)")
        bad = http.post("/v1/recommend", json={"user_id": 1, "k": 0})
        console.print(f"malformed request (k=0) → {bad.status_code}: {bad.json().get('detail', bad.text)}")
        _show_latency(http)
    return str(path)


def batch_predict(client: Client, deployment: str) -> None:
    """Top-10 for every user of the ratings dataset into a versioned dataset (``recplane predict``)."""
    result = client.predict(deployment, users="ml100k_users", out="demo_top10", k=10, progress=True)
    console.print(f"recplane predict: {result.users:,} users → demo_top10 v{result.version} "
                  f"({result.rows:,} rows in {result.seconds:.1f}s, {result.fallback_users} by fallback)")


def _show_answer(http: httpx.Client, body: dict[str, Any], label: str) -> None:
    answer = http.post("/v1/recommend", json=body).json()
    items = ", ".join(f"{item['item_id']} ({item['score']:.3f})" for item in answer["items"])
    extra = f"fallback: {answer['fallback']}" if answer.get("fallback") else f"rules: {answer.get('rules')}"
    console.print(f"{label}: [{items}]\n  models {answer['model_versions']}, {extra}, "
                  f"stages {({k: round(v, 2) for k, v in answer.get('timings_ms', {}).items()})} ms")


def _show_latency(http: httpx.Client) -> None:
    latencies = []
    for user in range(1, _LATENCY_REQUESTS + 1):
        started = time.perf_counter()
        http.post("/v1/recommend", json={"user_id": user, "k": 10}).raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    console.print(f"{_LATENCY_REQUESTS} sequential requests over loopback (retrieval + ranking + rules): "
                  f"p50 {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms")


@contextlib.contextmanager
def _serving(home: Path, deployment: Path, port: int) -> Iterator[str]:
    """A ``recplane serve`` process for the tour, ready when this yields its URL; stopped afterwards."""
    command = [sys.executable, "-m", "recplane", "--home", str(home), "serve", str(deployment),
               "--port", str(port), "--dev"]
    log = home / "demo-serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url, log)
        console.print(f"recplane serve {deployment.name} → {url} (ready; log: {log})")
        yield url
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        if process.poll() is None:
            process.kill()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    with console.status("Starting recplane serve: loading models, building the index, warming up…"):
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RecplaneError(f"recplane serve exited with {process.returncode}; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.2)
    raise RecplaneError(f"recplane serve was not ready after {_READY_TIMEOUT_S:.0f}s; see {log}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
