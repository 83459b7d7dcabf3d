"""The local backend: each job attempt is a group of subprocesses on this machine, watched by a supervisor.

Capacity is the machine's (CPU count, memory; GPUs as configured) unless settings say otherwise. Every attempt
gets a folder ``HOME/jobs/<id>/attempts/<n>/`` and a detached supervisor process
(:mod:`recplane.scheduler.backends.local_supervisor`) that starts the job's processes, samples their CPU and
memory with psutil, forwards stop requests (SIGTERM, then SIGKILL after the grace period) and writes the exit
code. The job's output goes to ``HOME/jobs/<id>/log`` (all attempts, one after the other).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from recplane.config import Settings
from recplane.errors import BackendUnavailable
from recplane.scheduler.admission import Resources
from recplane.scheduler.backends import local_supervisor
from recplane.scheduler.backends.protocol import BackendStatus, Launch, LogChunk, ResourceUsage

__all__ = ["LocalBackend", "from_settings", "machine_capacity"]

_SUPERVISOR = Path(local_supervisor.__file__).resolve()
_LOST = -9  # the exit code of an attempt whose supervisor vanished without writing one (killed with it)


def machine_capacity(cpu: float | None = None, memory_gb: float | None = None, gpu: float = 0.0) -> Resources:
    """This machine's CPUs and memory (each overridable), and ``gpu`` GPUs."""
    cores = cpu if cpu is not None else float(psutil.cpu_count(logical=True) or 1)
    memory = memory_gb if memory_gb is not None else psutil.virtual_memory().total / 1e9
    return Resources(cores, memory, gpu)


class LocalBackend:
    """Job attempts as supervised subprocess groups under ``root`` (``HOME/jobs``)."""

    name = "local"

    def __init__(self, root: Path, capacity: Resources, *, sample_seconds: float = 0.25) -> None:
        self.root = Path(root)
        self._capacity = capacity
        self.sample_seconds = sample_seconds
        self._supervisors: dict[int, subprocess.Popen[bytes]] = {}  # reaped on poll, so none lingers as a zombie

    def capacity(self) -> Resources:
        """What the planner may place here at once."""
        return self._capacity

    def submit(self, launch: Launch) -> dict[str, Any]:
        """Write the attempt's launch file and start its supervisor; returns the handle."""
        folder = self.root / launch.job_id / "attempts" / str(launch.attempt)
        folder.mkdir(parents=True, exist_ok=True)
        log = self.root / launch.job_id / "log"
        description = {
            "attempt": launch.attempt,
            "argv": launch.argv,
            "env": launch.env,
            "processes": launch.processes,
            "grace_seconds": launch.grace_seconds,
            "cwd": launch.cwd,
            "log": str(log),
            "sample_seconds": self.sample_seconds,
        }
        (folder / "launch.json").write_text(json.dumps(description))
        try:
            supervisor = subprocess.Popen(
                [sys.executable, str(_SUPERVISOR), str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(folder / "supervisor.err").open("ab"),
                start_new_session=True,  # a Ctrl-C or restart of the control plane must not reach the job
            )
        except OSError as exc:
            raise BackendUnavailable(f"Cannot start job {launch.job_id} locally: {exc}") from exc
        self._supervisors[supervisor.pid] = supervisor
        return {
            "dir": str(folder),
            "log": str(log),
            "supervisor_pid": supervisor.pid,
            "supervisor_started": _started(supervisor.pid),
        }

    def poll(self, handle: dict[str, Any]) -> BackendStatus:
        """Running while the supervisor lives; then its recorded exit code (or -9 when it vanished)."""
        folder = Path(handle["dir"])
        pid = _first_pid(folder)
        ended = _read_json(folder / "exit.json")
        if ended is not None:
            self._reap(handle)
            return BackendStatus(running=False, exit_code=int(ended["exit_code"]), pid=pid)
        if self._supervisor_alive(handle):
            return BackendStatus(running=True, pid=pid)
        ended = _read_json(folder / "exit.json")  # it may have finished between the two looks
        if ended is not None:
            return BackendStatus(running=False, exit_code=int(ended["exit_code"]), pid=pid)
        self._kill_groups(folder, signal.SIGKILL)  # orphans of a killed supervisor: nobody would record them
        return BackendStatus(running=False, exit_code=_LOST, pid=pid, detail={"lost": True})

    def cancel(self, handle: dict[str, Any], *, grace_seconds: float) -> None:
        """SIGTERM through the supervisor (it kills after ``grace_seconds``); 0 kills the processes now."""
        folder = Path(handle["dir"])
        if grace_seconds <= 0 or not self._supervisor_alive(handle):
            self._kill_groups(folder, signal.SIGKILL)
            return
        (folder / "stop.json").write_text(json.dumps({"grace_seconds": grace_seconds}))
        if (folder / "pids.json").is_file():  # its SIGTERM handler is in place; before that the file suffices
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(handle["supervisor_pid"]), signal.SIGTERM)

    def logs(self, handle: dict[str, Any], offset: int = 0) -> LogChunk:
        """Bytes ``offset..`` of the job's log file."""
        path = Path(handle["log"])
        if not path.is_file():
            return LogChunk("", offset)
        with path.open("rb") as log:
            log.seek(offset)
            data = log.read()
        return LogChunk(data.decode("utf-8", errors="replace"), offset + len(data))

    def usage(self, handle: dict[str, Any]) -> ResourceUsage:
        """The supervisor's latest measurement (final after exit)."""
        folder = Path(handle["dir"])
        ended = _read_json(folder / "exit.json")
        values = ended["usage"] if ended is not None else _read_json(folder / "usage.json")
        if not values:
            return ResourceUsage()
        return ResourceUsage(
            cpu_seconds=float(values["cpu_seconds"]),
            memory_gb_seconds=float(values["memory_gb_seconds"]),
            peak_memory_gb=float(values["peak_memory_gb"]),
            wall_seconds=float(values["wall_seconds"]),
        )

    def _reap(self, handle: dict[str, Any]) -> None:
        process = self._supervisors.pop(int(handle["supervisor_pid"]), None)
        if process is not None:
            process.poll()

    def _supervisor_alive(self, handle: dict[str, Any]) -> bool:
        pid = int(handle["supervisor_pid"])
        process = self._supervisors.get(pid)
        if process is not None:
            return process.poll() is None
        try:
            supervisor = psutil.Process(pid)
            return supervisor.create_time() == handle["supervisor_started"] and supervisor.status() != "zombie"
        except psutil.NoSuchProcess:
            return False

    def _kill_groups(self, folder: Path, signum: int) -> None:
        recorded = _read_json(folder / "pids.json") or {}
        pids, started = recorded.get("pids", []), recorded.get("started", [])
        for pid, created in zip(pids, started, strict=False):
            if _started(int(pid)) != created:
                continue  # gone, or the pid now names another process: never signal a stranger
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signum)


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def _first_pid(folder: Path) -> int | None:
    pids = (_read_json(folder / "pids.json") or {}).get("pids") or []
    return int(pids[0]) if pids else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def from_settings(settings: Settings) -> LocalBackend:
    """The local backend of a recplane home: capacity from the machine unless the settings fix it."""
    capacity = machine_capacity(
        settings.scheduler_capacity_cpu, settings.scheduler_capacity_memory_gb, settings.scheduler_capacity_gpu
    )
    return LocalBackend(settings.home.resolve() / "jobs", capacity)
