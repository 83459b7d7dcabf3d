"""The servers ``recplane bench serving`` compares, each started as its own process tree on a free loopback port.

* ``recplane`` — ``python -m recplane --home H serve DEPLOYMENT.yaml --port P --dev`` exactly as an operator
  runs it (``--dev``: no token check, as the peers have none), ready when ``/readyz`` says 200;
* ``fastapi`` — ``peer_fastapi.py`` in recplane's venv, ready on ``/readyz``;
* ``rayserve`` — ``benchmarks/peers/rayserve/serve_peer.py`` in that folder's venv, ready when it prints READY;
* ``trivial`` — ``loadgen.py --serve-trivial``, the fixed-answer server the generator's ceiling is measured on.

Every server gets the whole machine (2 cores here), shared with the load generator. CPU time and memory are
read over the whole process tree (Ray's raylet, GCS, proxy and replica are children of the peer's driver).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RAY_DIR = REPO / "benchmarks" / "peers" / "rayserve"
RAY_PYTHON = RAY_DIR / ".venv" / "bin" / "python"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The caller's environment without ``RECPLANE_*`` settings (a ``RECPLANE_URL`` would make a client remote)."""
    keep = ("RECPLANE_TEST_", "RECPLANE_MOVIELENS_PATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECPLANE_") or k.startswith(keep)}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", **extra}


class Server:
    """A started server process (tree): its URL, log file, CPU and memory readings, and how to stop it."""

    def __init__(self, name: str, port: int, process: subprocess.Popen[bytes], log: Path, path: str) -> None:
        self.name, self.port, self.process, self.log = name, port, process, log
        self.url = f"http://127.0.0.1:{port}{path}"

    def _tree(self) -> list[Any]:
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole process tree so far."""
        total = 0.0
        for process in self._tree():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except Exception:  # a Ray worker that just exited
                continue
        return total

    def rss_mb(self) -> float:
        """Resident memory of the whole process tree now, in MB."""
        total = 0
        for process in self._tree():
            try:
                total += process.memory_info().rss
            except Exception:
                continue
        return total / 2**20

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (Ray's driver then shuts Serve and Ray down), SIGKILL to the group when it hangs."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _spawn(name: str, args: list[str], scratch: Path, path: str, port: int, env: dict[str, str]) -> Server:
    log = scratch / f"{name}-{port}.log"
    handle = log.open("wb")
    process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    return Server(name, port, process, log, path)


def _wait(server: Server, ready: Any, timeout: float) -> Server:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}: {server.tail()}")
        if ready(server):
            return server
        time.sleep(0.25)
    server.stop()
    raise TimeoutError(f"{server.name} not ready within {timeout:.0f} s: {server.tail()}")


def _http_ok(path: str) -> Any:
    def ready(server: Server) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    return ready


def start_recplane(home: str, deployment: str, scratch: Path, timeout: float = 600.0) -> Server:
    """``recplane serve`` of one deployment (dev mode), ready once its models are loaded and warmed up."""
    port = free_port()
    args = [sys.executable, "-m", "recplane", "--home", home, "serve", deployment, "--port", str(port), "--dev"]
    server = _spawn("recplane", args, scratch, "/v1/recommend", port, child_env(RECPLANE_LOG_LEVEL="warning"))
    return _wait(server, _http_ok("/readyz"), timeout)


def start_fastapi(
    retrieval: str, ranking: str, candidates: int, scratch: Path, threads: int = 0, timeout: float = 600.0
) -> Server:
    """Peer (a): the minimal FastAPI + PyTorch service."""
    port = free_port()
    args = [
        sys.executable,
        str(HERE / "peer_fastapi.py"),
        "--retrieval",
        retrieval,
        "--ranking",
        ranking,
        "--candidates",
        str(candidates),
        "--port",
        str(port),
        "--threads",
        str(threads),
    ]
    server = _spawn("fastapi", args, scratch, "/v1/recommend", port, child_env())
    return _wait(server, _http_ok("/readyz"), timeout)


def ray_unavailable() -> str | None:
    """Why the Ray Serve peer cannot run here, or None."""
    if not RAY_PYTHON.exists():
        setup = RAY_DIR.relative_to(REPO) / "setup.sh"
        return f"Ray Serve venv missing ({RAY_PYTHON.relative_to(REPO)}): run `bash {setup}`"
    return None


def start_rayserve(
    retrieval: str,
    ranking: str,
    candidates: int,
    probe_user: Any,
    scratch: Path,
    threads: int = 0,
    timeout: float = 600.0,
) -> Server:
    """Peer (b): Ray Serve in its own venv, ready once its driver printed READY."""
    port = free_port()
    args = [
        str(RAY_PYTHON),
        str(RAY_DIR / "serve_peer.py"),
        "--retrieval",
        retrieval,
        "--ranking",
        ranking,
        "--candidates",
        str(candidates),
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--probe-user",
        str(probe_user),
    ]
    server = _spawn("rayserve", args, scratch, "/v1/recommend", port, child_env())
    return _wait(server, lambda s: "READY" in s.tail(4000), timeout)


def start_trivial(scratch: Path) -> Server:
    """The fixed-answer server for the load generator's ceiling."""
    port = free_port()
    args = [sys.executable, str(HERE / "loadgen.py"), "--serve-trivial", str(port)]
    server = _spawn("trivial", args, scratch, "/trivial", port, child_env())

    def ready(server: Server) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1.0):
                return True
        except OSError:
            return False

    return _wait(server, ready, 30.0)
