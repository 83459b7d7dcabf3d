"""`recplane serve --workers 2`: each worker process loads its own models and answers (none is killed mid-load)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.fixtures.serve import ServeProcess, register_versions

from recplane.config import Settings
from recplane.runtime import Runtime

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_several_worker_processes_each_load_and_serve(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Runtime(Settings(home=home)) as runtime:
        register_versions(runtime.registry, "mf", 1)
    workers = ServeProcess(home, {"name": "home", "retrieval": {"name": "mf"}}, args=["--workers", "2"])
    workers.start(timeout=180)  # two processes load torch, faiss and the model at once
    try:
        pids = set()
        for _ in range(20):
            with httpx.Client(timeout=10) as client:  # a new connection each time: either worker may accept it
                answer = client.post(f"{workers.url}/v1/recommend", json={"user_id": 3})
                assert answer.status_code in (200, 503)  # 503: that worker is still loading (its /readyz says so)
                pids.add(client.get(f"{workers.url}/v1/deployment").json()["pid"])
        log = workers.log.read_text()
        # uvicorn pings workers every few seconds; a worker busy loading models must not be killed for it
        assert log.count("Application startup complete") == 2 and "died" not in log
        assert workers.process is not None and workers.process.pid not in pids  # answered by the children
    finally:
        workers.stop()
