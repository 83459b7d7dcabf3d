"""The supervisor of one local job attempt: starts its processes, measures them, stops them, records how they ended.

The local backend runs this file by path (``python local_supervisor.py ATTEMPT_DIR``, so it imports only the
standard library and psutil, not recplane), detached in its own session. It outlives the scheduler that started
it, so a control plane restart loses neither a running job nor its exit code. The attempt folder holds:

* ``launch.json`` (read): argv, env additions, processes (gang ranks), grace seconds, cwd, log path.
* ``pids.json`` (written once the processes run): their pids; each rank leads its own process group.
* ``usage.json`` (rewritten every second): CPU seconds, memory GB-seconds, peak memory, wall seconds so far.
* ``exit.json`` (written last): the exit code (negative: the signal that killed it) and the final usage.

A stop request is ``stop.json`` (its grace period overrides the launch's), plus SIGTERM to the supervisor once
``pids.json`` says its handler is in place (the file is checked every sample too, so no request is lost). The
rank leaders get SIGTERM, and after the grace period their whole process groups get SIGKILL. A gang fails as one:
when a rank exits non-zero, the others are stopped the same way. CPU seconds are sampled from each rank's process
tree (every process seen, including children) and reconciled with the kernel's rusage of the reaped ranks; memory
is the sampled resident set of the trees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

SAMPLE_SECONDS = 0.25
USAGE_EVERY_SECONDS = 1.0
_GB = 1e9


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, path)


class _Meter:
    """Samples the process trees of the ranks: CPU seconds per process ever seen, resident memory over time."""

    def __init__(self) -> None:
        self.cpu_by_process: dict[tuple[int, float], float] = {}
        self.memory_gb_seconds = 0.0
        self.peak_memory_gb = 0.0
        self.started = time.monotonic()
        self.last_sample = self.started

    def sample(self, pids: list[int]) -> None:
        now = time.monotonic()
        resident = 0
        for pid in pids:
            for process in _tree(pid):
                try:
                    with process.oneshot():
                        times = process.cpu_times()
                        key = (process.pid, process.create_time())
                        resident += process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                self.cpu_by_process[key] = max(self.cpu_by_process.get(key, 0.0), times.user + times.system)
        gb = resident / _GB
        self.memory_gb_seconds += gb * (now - self.last_sample)
        self.peak_memory_gb = max(self.peak_memory_gb, gb)
        self.last_sample = now

    def usage(self, rusage_cpu: float = 0.0, rusage_peak_gb: float = 0.0) -> dict[str, float]:
        return {
            "cpu_seconds": max(sum(self.cpu_by_process.values()), rusage_cpu),
            "memory_gb_seconds": self.memory_gb_seconds,
            "peak_memory_gb": max(self.peak_memory_gb, rusage_peak_gb),
            "wall_seconds": time.monotonic() - self.started,
        }


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


class _Gang:
    """The attempt's processes, one process group per rank."""

    def __init__(self, folder: Path, launch: dict[str, Any]) -> None:
        self.folder = folder
        self.grace = float(launch.get("grace_seconds", 30.0))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.codes: dict[int, int] = {}
        self.rusage_cpu = 0.0
        self.rusage_peak_gb = 0.0
        self.kill_at: float | None = None
        self.first_failure: int | None = None
        self._start(launch)

    def _start(self, launch: dict[str, Any]) -> None:
        count = int(launch.get("processes", 1))
        with Path(launch["log"]).open("ab") as log:
            for rank in range(count):
                env = {**os.environ, **launch.get("env", {}), "RECPLANE_WORKER_RANK": str(rank),
                       "RECPLANE_WORKERS": str(count)}
                process = subprocess.Popen(
                    launch["argv"], env=env, cwd=launch.get("cwd"), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
                self.processes[process.pid] = process
        _write_json(self.folder / "pids.json", {"pids": list(self.processes), "started": [_started(p) for p in
                                                                                   self.processes]})

    @property
    def alive(self) -> list[int]:
        return [pid for pid in self.processes if pid not in self.codes]

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM to every rank's leader now (it may save its state and stop its own workers), SIGKILL to their
        whole process groups after the grace period."""
        self._signal(signal.SIGTERM, group=False)
        deadline = time.monotonic() + (self.grace if grace is None else grace)
        self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)

    def _signal(self, signum: int, *, group: bool) -> None:
        for pid in self.alive:
            try:
                if group:
                    os.killpg(pid, signum)
                else:
                    os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                continue

    def reap(self) -> None:
        """Collect ranks that ended; a failed rank stops the gang."""
        for pid in self.alive:
            try:
                done, status, rusage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                done, status, rusage = pid, 255 << 8, None
            if done == 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            self.codes[pid] = code
            if rusage is not None:
                self.rusage_cpu += rusage.ru_utime + rusage.ru_stime
                self.rusage_peak_gb = max(self.rusage_peak_gb, rusage.ru_maxrss * 1024 / _GB)
            if code != 0 and self.first_failure is None:
                self.first_failure = code
                if self.alive:
                    self.stop()
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            self._signal(signal.SIGKILL, group=True)

    @property
    def exit_code(self) -> int:
        return self.first_failure if self.first_failure is not None else 0


def _stop_request(gang: _Gang, folder: Path) -> None:
    stop = folder / "stop.json"
    grace = None
    if stop.is_file():
        try:
            grace = float(json.loads(stop.read_text()).get("grace_seconds"))
        except (ValueError, TypeError, json.JSONDecodeError):
            grace = None
    gang.stop(grace)


def supervise(folder: Path) -> int:
    """Run the attempt described in ``folder/launch.json`` to its end; returns its exit code."""
    launch = json.loads((folder / "launch.json").read_text())
    log = Path(launch["log"])
    with log.open("a") as out:
        out.write(f"--- attempt {launch.get('attempt', 1)} started {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
    meter = _Meter()
    stopping = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(asked=True))
    stop_file = folder / "stop.json"
    if stop_file.exists():  # stopped before it started: never start it
        return _end(folder, log, launch, -signal.SIGTERM, meter.usage())
    gang = _Gang(folder, launch)
    handled = False
    last_usage = 0.0
    pause = 0.01  # short jobs end within milliseconds: look often at first, then every sample period
    while gang.alive:
        if (stopping["asked"] or stop_file.exists()) and not handled:
            handled = True
            _stop_request(gang, folder)
        meter.sample(gang.alive)
        gang.reap()
        if time.monotonic() - last_usage >= USAGE_EVERY_SECONDS:
            last_usage = time.monotonic()
            _write_json(folder / "usage.json", meter.usage(gang.rusage_cpu, gang.rusage_peak_gb))
        if gang.alive:
            time.sleep(pause)
            pause = min(pause * 2, float(launch.get("sample_seconds", SAMPLE_SECONDS)))
    return _end(folder, log, launch, gang.exit_code, meter.usage(gang.rusage_cpu, gang.rusage_peak_gb))


def _end(folder: Path, log: Path, launch: dict[str, Any], code: int, usage: dict[str, float]) -> int:
    _write_json(folder / "usage.json", usage)
    with log.open("a") as out:
        out.write(f"--- attempt {launch.get('attempt', 1)} exited with code {code} ---\n")
    _write_json(folder / "exit.json", {"exit_code": code, "usage": usage, "finished": time.time()})
    return code


if __name__ == "__main__":
    supervise(Path(sys.argv[1]))
