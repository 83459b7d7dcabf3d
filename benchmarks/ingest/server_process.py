"""A real ``recplane server --dev`` subprocess on a free loopback port, for the HTTP cases.

Started exactly as an operator would (``python -m recplane --home H server --dev --port P``) with extra
``RECPLANE_*`` environment variables (e.g. group commit off), and ready once ``/readyz`` answers 200. It runs
in its home folder with no inherited ``RECPLANE_*`` variables, so neither a ``recplane.yaml`` in the caller's
folder nor the caller's environment changes what is measured.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

__all__ = ["RunningServer", "clean_environment", "free_port", "recplane_server"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RunningServer:
    """Handle on a started server: its URL, home and process."""

    def __init__(self, home: Path, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.home, self.port, self.process, self.log = home, port, process, log
        self.url = f"http://127.0.0.1:{port}"

    def peak_rss_bytes(self) -> int | None:
        """The server process's peak resident memory so far (Linux VmHWM), None where unknown."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (all its threads)."""
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def create_dataset(self, spec: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/datasets (dev mode: no token needed)."""
        response = httpx.post(f"{self.url}/v1/datasets", json=spec, timeout=60.0)
        response.raise_for_status()
        return dict(response.json())

    def dataset(self, name: str) -> dict[str, Any]:
        """GET /v1/datasets/NAME."""
        response = httpx.get(f"{self.url}/v1/datasets/{name}", timeout=60.0)
        response.raise_for_status()
        return dict(response.json())


def _wait_ready(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"recplane server exited with {server.process.returncode}; see {server.log}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"recplane server not ready after {timeout}s; see {server.log}")


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without RECPLANE_* settings (the benchmark decides them), plus ``extra``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RECPLANE_")}
    return {**inherited, **(extra or {})}


@contextmanager
def recplane_server(home: Path, env: dict[str, str] | None = None, timeout: float = 60.0) -> Iterator[RunningServer]:
    """Run a dev-mode server on a fresh home; stopped (SIGTERM, graceful) when the block ends."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home.parent / f"{home.name}-server.log"
    args = [sys.executable, "-m", "recplane", "--home", str(home), "server", "--dev", "--port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(args, env=clean_environment(env), cwd=home, stdout=sink,
                                   stderr=subprocess.STDOUT)
    server = RunningServer(home, port, process, log)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
