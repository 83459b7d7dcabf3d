"""Peer (b) of ``recplane bench serving``: the same model served by Ray Serve 2.60, in this folder's own venv.

``.venv/bin/python serve_peer.py --retrieval BUNDLE --ranking BUNDLE --port P`` starts a local Ray instance
(``num_cpus`` = the machine's cores, no dashboard), deploys one replica of :class:`Recommend` behind Serve's HTTP
proxy on ``127.0.0.1:P`` (route ``/v1/recommend``, ``POST {"user_id": ..., "k": 10}``), prints ``READY`` once a
request has been answered end to end, and serves until SIGTERM/SIGINT, when it shuts Serve and Ray down.

The replica runs the shared pipeline (``benchmarks/serving/torch_recommender.py``: TorchScript query graph,
``query @ items``, seen items masked, ``topk(200)``, TorchScript ranker, sort, top k) on the same bundle files as
recplane and the FastAPI peer. Configured as Ray Serve's docs recommend for throughput, not the naive way:
``@serve.batch`` dynamic batching with recplane's own micro-batch settings (up to 32 requests, 2 ms wait), so both
sides batch alike, and ``max_ongoing_requests`` high enough for the benchmark's 32 connections. Never imports
recplane.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from ray import serve
from starlette.requests import Request

SERVING_BENCH = Path(__file__).resolve().parents[2] / "serving"


@serve.deployment(max_ongoing_requests=128)
class Recommend:
    """One replica: the shared torch pipeline behind Serve's dynamic batching."""

    def __init__(self, retrieval: str, ranking: str, candidates: int, threads: int) -> None:
        sys.path.insert(0, str(SERVING_BENCH))
        import torch
        from torch_recommender import TorchRecommender

        if threads:
            torch.set_num_threads(threads)
        self.model = TorchRecommender(retrieval, ranking, candidates=candidates)
        self.model.recommend(next(iter(self.model.user_ids)), 10)  # TorchScript's first calls profile the graph

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def recommend(self, requests: list[tuple[Any, int]]) -> list[dict[str, Any]]:
        users = [user for user, _ in requests]
        ks = [k for _, k in requests]
        return self.model.recommend_batch(users, ks)

    async def __call__(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        answer: dict[str, Any] = await self.recommend((body["user_id"], int(body.get("k", 10))))
        return answer


def wait_ready(port: int, user: Any, timeout: float) -> None:
    """Block until one recommendation came back through the HTTP proxy."""
    deadline = time.monotonic() + timeout
    data = ('{"user_id": %s, "k": 10}' % (user if isinstance(user, int) else f'"{user}"')).encode()
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/recommend", data=data, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                if answer.status == 200:
                    return
        except Exception as exc:  # the proxy comes up a little after serve.run returns
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"Ray Serve did not answer on port {port} within {timeout:.0f} s: {last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retrieval", required=True)
    parser.add_argument("--ranking", required=True)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per replica (0: Ray's default)")
    parser.add_argument("--probe-user", default="1", help="a known user id for the readiness probe")
    args = parser.parse_args()
    ray.init(
        num_cpus=os.cpu_count() or 2,
        include_dashboard=False,
        object_store_memory=512 * 1024 * 1024,
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    app = Recommend.options(num_replicas=args.replicas).bind(
        str(Path(args.retrieval).resolve()), str(Path(args.ranking).resolve()), args.candidates, args.threads
    )
    serve.run(app, name="recommend", route_prefix="/v1/recommend")
    probe: Any = int(args.probe_user) if args.probe_user.lstrip("-").isdigit() else args.probe_user
    wait_ready(args.port, probe, timeout=180)
    print("READY", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
