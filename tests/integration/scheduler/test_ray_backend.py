"""The ray job backend against a real local Ray head (``ray start --head`` with its dashboard), started once.

The head runs as a subprocess of this test session with 2 CPUs, token authentication on (Ray 2.60's default,
with a token made for the session) and usage stats off; it is stopped (SIGTERM, then SIGKILL of whatever is
left in its session) at the end. Every test submits real Ray jobs through the Jobs API.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from tests.fixtures.scheduler.waiting import wait_for

from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import BackendUnavailable
from recplane.scheduler import Scheduler
from recplane.scheduler.admission import Resources
from recplane.scheduler.backends import BackendStatus, Launch
from recplane.scheduler.backends.ray import RayBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HEAD_START_SECONDS = 240.0  # a 2-core machine shared with other test runs can take a minute or more


@dataclass(frozen=True)
class RayHead:
    address: str
    token: str

    def backend(self) -> RayBackend:
        return RayBackend(self.address, token=self.token)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop_session(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the head (it stops its own processes), then SIGKILL anything left in the session it leads."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    for leftover in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(leftover.pid) == process.pid:
                leftover.kill()


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """One local Ray head for the whole session, with the Jobs API on a free port."""
    temp = tempfile.mkdtemp(prefix="rpray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    token = secrets.token_hex(16)
    dashboard = _free_port()
    command = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus", "2",
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--port", str(_free_port()), "--ray-client-server-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()), "--object-store-memory", str(200_000_000),
        "--disable-usage-stats", "--temp-dir", temp,
    ]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    log = Path(temp) / "head.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{dashboard}", token)
    try:
        started = time.monotonic()
        while head.backend().capacity().cpu < 2:
            if process.poll() is not None or time.monotonic() - started > HEAD_START_SECONDS:
                raise RuntimeError(f"the Ray head did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield head
    finally:
        _stop_session(process)
        shutil.rmtree(temp, ignore_errors=True)


def launch(job_id: str, code: str, **changes: Any) -> Launch:
    base: dict[str, Any] = {"job_id": job_id, "attempt": 1, "argv": [sys.executable, "-c", code], "env": {},
                            "resources": Resources(0.5, 0.2, 0), "grace_seconds": 5}
    return Launch(**{**base, **changes})


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"  # Ray keeps submission ids for the cluster's life


def wait_ended(backend: RayBackend, handle: dict[str, Any], timeout: float = 120) -> BackendStatus:
    def ended() -> BackendStatus | None:
        status = backend.poll(handle)
        return None if status.running else status

    found = wait_for(ended, timeout, f"Ray job {handle['submission_id']} to end")
    assert isinstance(found, BackendStatus)
    return found


def test_capacity_is_the_clusters_resources(ray_head: RayHead) -> None:
    capacity = ray_head.backend().capacity()
    assert capacity.cpu == 2 and capacity.gpu == 0
    assert capacity.memory_gb > 0.5  # Ray's memory resource: what the head found on this machine


def test_a_job_runs_to_success_in_its_folder_with_its_environment_and_logs(ray_head: RayHead, tmp_path: Path) -> None:
    backend = ray_head.backend()
    code = "import os; print(os.environ['GREETING'], os.getcwd(), os.environ['RECPLANE_WORKER_RANK'], flush=True)"
    attempt = launch(unique("hello"), code, env={"GREETING": "hello-from-ray"}, cwd=str(tmp_path))
    handle = backend.submit(attempt)
    status = wait_ended(backend, handle)
    assert status.exit_code == 0 and status.detail["ray_status"] == "SUCCEEDED"
    assert backend.submit(attempt) == handle  # submitted again (a crash before the handle was saved): adopted
    chunk = backend.logs(handle)
    assert f"hello-from-ray {tmp_path} 0" in chunk.text
    assert chunk.next_offset == len(chunk.text.encode())
    assert backend.logs(handle, chunk.next_offset).text == ""  # nothing new past the end
    tail = backend.logs(handle, chunk.next_offset - 10)
    assert tail.text == chunk.text.encode()[-10:].decode() and tail.next_offset == chunk.next_offset
    usage = backend.usage(handle)
    assert usage.wall_seconds > 0 and usage.cpu_seconds == pytest.approx(0.5 * usage.wall_seconds)
    assert usage.memory_gb_seconds == pytest.approx(0.2 * usage.wall_seconds)


def test_a_failing_job_reports_its_exit_code(ray_head: RayHead) -> None:
    backend = ray_head.backend()
    handle = backend.submit(launch(unique("fail"), "import sys; print('about to fail', flush=True); sys.exit(3)"))
    status = wait_ended(backend, handle)
    assert status.exit_code == 3 and status.detail["ray_status"] == "FAILED"
    assert "about to fail" in backend.logs(handle).text


def test_cancel_stops_a_sleeping_job_with_sigterm(ray_head: RayHead) -> None:
    backend = ray_head.backend()
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: (print('got SIGTERM', flush=True), sys.exit(143)))\n"
            "print('up', flush=True)\n"
            "time.sleep(120)\n")
    handle = backend.submit(launch(unique("sleeper"), code))
    wait_for(lambda: "up" in backend.logs(handle).text, 120, "the sleeper to start")
    backend.cancel(handle, grace_seconds=5)
    status = wait_ended(backend, handle, timeout=60)
    assert status.exit_code == -signal.SIGTERM and status.detail["ray_status"] == "STOPPED"
    assert "got SIGTERM" in backend.logs(handle).text


def test_a_gang_rendezvous_with_torch_distributed_across_its_ranks(ray_head: RayHead) -> None:
    backend = ray_head.backend()
    code = (
        "import os, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "value = torch.tensor([float(dist.get_rank() + 1)])\n"
        "dist.all_reduce(value)\n"
        "print(f\"rank {os.environ['RECPLANE_WORKER_RANK']}/{os.environ['RECPLANE_WORKERS']} sum {value.item():g}\","
        " os.environ['GANG_TAG'], flush=True)\n"
        "dist.destroy_process_group()\n"
    )
    handle = backend.submit(launch(unique("gang"), code, processes=2, env={"OMP_NUM_THREADS": "1", "GANG_TAG": "t7"}))
    status = wait_ended(backend, handle, timeout=240)
    text = backend.logs(handle).text
    assert status.exit_code == 0, text
    assert "rank 0/2 sum 3 t7" in text and "rank 1/2 sum 3 t7" in text  # 1 + 2, reduced over the process group
    ranks = [line for line in text.splitlines() if " sum 3 " in line]
    assert len(ranks) == 2 and all(line.startswith("(GangRank pid=") for line in ranks)  # no colour codes
    assert backend.usage(handle).cpu_seconds == pytest.approx(2 * 0.5 * backend.usage(handle).wall_seconds, rel=0.2)


def test_a_failing_rank_fails_the_gang(ray_head: RayHead) -> None:
    backend = ray_head.backend()
    code = ("import os, sys, time\n"
            "if os.environ['RANK'] == '1': sys.exit(7)\n"
            "time.sleep(120)\n")
    handle = backend.submit(launch(unique("gang-fail"), code, processes=2, grace_seconds=2))
    status = wait_ended(backend, handle, timeout=180)
    assert status.exit_code == 7, backend.logs(handle).text


def test_no_cluster_is_a_clear_error_and_holds_jobs() -> None:
    backend = RayBackend(f"http://127.0.0.1:{_free_port()}", token="unused")
    expected = r"No Ray cluster at http://127\.0\.0\.1:\d+: start one with `ray start --head`"
    with pytest.raises(BackendUnavailable, match=expected):
        backend.submit(launch("nowhere", "print(1)"))
    assert backend.capacity() == Resources()  # its queues wait instead of failing their jobs
    status = backend.poll({"submission_id": "recplane-nowhere-1"})
    assert status.running and "No Ray cluster" in status.detail["unreachable"]


def test_a_job_through_the_scheduler_on_a_ray_queue(
    ray_head: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)  # the backend reads it as Ray's CLI does
    settings = Settings(home=tmp_path / "home", scheduler_ray_address=ray_head.address, scheduler_grace_seconds=5,
                        scheduler_interval_seconds=0.2)
    settings.home.mkdir(parents=True)
    catalog = Catalog(settings.catalog_url)
    scheduler = Scheduler(catalog, settings)
    try:
        (queue,) = scheduler.apply_queues({"name": "recsys-ray", "team": "recsys", "backend": "ray",
                                           "nominal": {"cpu": 2, "memory_gb": 4}})
        assert queue.name == "recsys-ray"
        scheduler.start()
        job = scheduler.submit({"kind": "custom", "entrypoint": "tests.fixtures.scheduler.jobs:hello",
                                "args": {"name": "ray"}, "team": "recsys", "queue": "recsys-ray",
                                "resources": {"cpu": 1, "memory_gb": 0.5}})
        done = scheduler.wait(job.id, timeout=180)
        log = "".join(scheduler.logs(job.id))
        assert done.status == "succeeded", (done.error, log)
        assert done.backend == "ray" and done.exit_code == 0 and done.result == {"greeting": "hello ray"}
        assert [(e.from_status, e.to_status) for e in done.events] == [
            (None, "queued"), ("queued", "admitted"), ("admitted", "running"), ("running", "succeeded")]
        assert "hello ray" in log
        (row,) = scheduler.usage(team="recsys", group_by=["team", "queue"]).rows
        assert row.group == {"team": "recsys", "queue": "recsys-ray"} and row.jobs == 1
        assert row.wall_hours > 0 and row.cpu_hours == pytest.approx(row.wall_hours)  # 1 CPU reserved x wall
    finally:
        scheduler.close()
        for job in scheduler.list_jobs(limit=100):
            if not job.finished:
                scheduler.cancel(job.id)
        catalog.close()
