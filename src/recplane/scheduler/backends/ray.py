"""The Ray backend: each job attempt is one Ray job, submitted through the Ray Jobs API of a cluster's dashboard.

The control plane only speaks HTTP to the dashboard (``JobSubmissionClient``); it never joins the cluster as a
driver. An attempt's Ray job runs the launch's command (shell-quoted, after ``cd`` into the launch's working
folder) with the launch's environment as ``runtime_env.env_vars`` and reserves the launch's resources
(``entrypoint_num_cpus/gpus/memory``). The command, the working folder and the catalog named in that environment
are paths of the submitting machine: a cluster that shares its filesystem (a local head, or NFS everywhere) runs
them as they are; a remote cluster needs recplane installed in its image at the same interpreter path
(``python=`` overrides it) and a catalog and lake it can reach (PostgreSQL, object storage).

Gangs (``Launch.processes > 1``) are one Ray job too, whose entrypoint is :mod:`recplane.scheduler.backends.ray_gang`:
it reserves one placement-group bundle per rank (all or nothing, as Ray Train does), starts every rank where its
bundle landed with the ``torch.distributed`` rendezvous variables set, and fails the gang as one.

Usage: wall time comes from the Ray job's start and end times. The Jobs API does not measure the entrypoint's
processes, so CPU seconds and memory GB-seconds are *estimates*: what the attempt reserved times its wall time.
Peak memory is not known (0).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recplane.config import Settings
from recplane.errors import BackendUnavailable
from recplane.scheduler.admission import Resources
from recplane.scheduler.backends.protocol import BackendStatus, Launch, LogChunk, ResourceUsage

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

__all__ = ["DEFAULT_ADDRESS", "RayBackend", "from_settings", "ray_auth_token"]

log = logging.getLogger("recplane.scheduler.ray")

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
_GB = 1e9
_STOPPED_EXIT = -15  # Ray records no exit code for a stopped job; it was ended by SIGTERM (SIGKILL after grace)
_LOST_EXIT = -9  # the cluster no longer knows the job (restarted, or the job was deleted)
_GANG_STOP_MARGIN_SECONDS = 5  # the gang driver forwards the stop to its ranks first, then waits their grace
_HINT = (
    "start one with `ray start --head` (its dashboard serves the Jobs API on port 8265) or set "
    "RECPLANE_SCHEDULER_RAY_ADDRESS to the dashboard address of your cluster"
)


def ray_auth_token(explicit: str | None = None) -> str | None:
    """The token for a cluster with token authentication, from where Ray's own CLI looks for it.

    In order: ``explicit``, ``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``.
    """
    if explicit:
        return explicit
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class RayBackend:
    """Job attempts as Ray jobs on the cluster whose dashboard is at ``address``."""

    name = "ray"

    def __init__(self, address: str = DEFAULT_ADDRESS, *, token: str | None = None, python: str | None = None) -> None:
        try:
            import ray.job_submission  # noqa: F401  (fail now, with the install hint, not at the first job)
        except ImportError as exc:
            raise BackendUnavailable("The ray job backend needs Ray: pip install 'recplane[ray]'") from exc
        self.address = address  # a dashboard URL, or anything Ray resolves to one (host:6379, auto, ray://...)
        self.python = python
        token = ray_auth_token(token)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client: JobSubmissionClient | None = None
        self._warned = False

    def capacity(self) -> Resources:
        """The summed resources of the cluster's live nodes; nothing (jobs wait) while it cannot be reached."""
        try:
            nodes = self._nodes()
        except BackendUnavailable as exc:
            if not self._warned:
                log.warning("%s; its queues hold their jobs until it is back", exc.message)
                self._warned = True
            return Resources()
        self._warned = False
        total: dict[str, float] = {}
        for node in nodes:
            if node.get("state") == "ALIVE":
                for key, value in (node.get("resources_total") or {}).items():
                    total[key] = total.get(key, 0.0) + float(value)
        return Resources(total.get("CPU", 0.0), total.get("memory", 0.0) / _GB, total.get("GPU", 0.0))

    def submit(self, launch: Launch) -> dict[str, Any]:
        """Submit the attempt as a Ray job (one driver, or a gang driver for several processes)."""
        submission_id = f"recplane-{launch.job_id}-{launch.attempt}"
        gang = launch.processes > 1
        grace = math.ceil(launch.grace_seconds) + (_GANG_STOP_MARGIN_SECONDS if gang else 0)
        env = {**launch.env, "RAY_JOB_STOP_WAIT_TIME_S": str(max(grace, 1))}  # Ray's SIGTERM-to-SIGKILL wait
        options: dict[str, Any] = {}
        if gang:
            env["RAY_COLOR_PREFIX"] = "0"  # the ranks' output reaches the log with plain "(GangRank pid=..)" prefixes
            entrypoint = self._gang_entrypoint(launch)  # the ranks reserve their resources, not the driver
        else:
            env.update(RECPLANE_WORKER_RANK="0", RECPLANE_WORKERS="1")
            entrypoint = self._entrypoint(launch.argv, launch.cwd)
            options = _reservation(launch.resources)
        try:
            self._call(
                lambda client: client.submit_job(
                    entrypoint=entrypoint,
                    submission_id=submission_id,
                    runtime_env={"env_vars": env},
                    metadata={**launch.labels, "recplane_job": launch.job_id, "attempt": str(launch.attempt)},
                    **options,
                ),
                f"submit job {launch.job_id}",
            )
        except BackendUnavailable as exc:
            if "already exists" not in exc.message:
                raise
            log.info("Ray job %s exists already (submitted before a restart); adopting it", submission_id)
        resources = launch.resources
        return {
            "address": self.address,
            "submission_id": submission_id,
            "processes": launch.processes,
            "cpu": resources.cpu,
            "memory_gb": resources.memory_gb,
            "gpu": resources.gpu,
        }

    def poll(self, handle: dict[str, Any]) -> BackendStatus:
        """PENDING and RUNNING are running; SUCCEEDED exits 0, FAILED with the driver's code, STOPPED by SIGTERM.

        While the cluster cannot be reached the attempt counts as running: it may well be, and a retry now could
        run it twice.
        """
        try:
            info = self._info(handle)
        except BackendUnavailable as exc:
            return BackendStatus(running=True, detail={"unreachable": exc.message})
        if info is None:
            return BackendStatus(running=False, exit_code=_LOST_EXIT, detail={"lost": True})
        status = str(info.status.value)
        detail = {"ray_status": status, "submission_id": handle["submission_id"]}
        if info.message:
            detail["message"] = str(info.message)[-2000:]
        if status in ("PENDING", "RUNNING"):
            return BackendStatus(running=True, detail=detail)
        return BackendStatus(running=False, exit_code=_exit_code(status, info.driver_exit_code), detail=detail)

    def cancel(self, handle: dict[str, Any], *, grace_seconds: float) -> None:
        """``stop_job``: Ray sends SIGTERM, then SIGKILL after the grace given at submission.

        The grace is fixed when the job is submitted (Ray reads it in the job's supervisor), so ``grace_seconds``
        here cannot shorten it; asking again only repeats the stop.
        """
        self._call(lambda client: client.stop_job(handle["submission_id"]), f"stop {handle['submission_id']}")

    def logs(self, handle: dict[str, Any], offset: int = 0) -> LogChunk:
        """Bytes ``offset..`` of the Ray job's log (the driver's output; a gang's ranks' output comes through it)."""
        try:
            text = self._call(lambda client: client.get_job_logs(handle["submission_id"]), "read logs")
        except BackendUnavailable:
            return LogChunk("", offset)
        data = str(text).encode("utf-8")[offset:]
        return LogChunk(data.decode("utf-8", errors="replace"), offset + len(data))

    def usage(self, handle: dict[str, Any]) -> ResourceUsage:
        """Wall time from the job's start and end; CPU and memory estimated as reserved x wall (not measured)."""
        try:
            info = self._info(handle)
        except BackendUnavailable:
            return ResourceUsage()
        if info is None or not info.start_time:
            return ResourceUsage()
        end = info.end_time or time.time() * 1000
        wall = max(0.0, (end - info.start_time) / 1000)
        processes = int(handle.get("processes", 1))
        return ResourceUsage(
            cpu_seconds=float(handle.get("cpu", 0.0)) * processes * wall,
            memory_gb_seconds=float(handle.get("memory_gb", 0.0)) * processes * wall,
            peak_memory_gb=0.0,
            wall_seconds=wall,
        )

    def _argv(self, argv: list[str]) -> list[str]:
        """The command with the cluster's interpreter in place of this one, when one was given."""
        if self.python and argv and argv[0] == sys.executable:
            return [self.python, *argv[1:]]
        return list(argv)

    def _entrypoint(self, argv: list[str], cwd: str | None) -> str:
        command = "exec " + shlex.join(self._argv(argv))  # exec: Ray's SIGTERM reaches the job itself, not a shell
        return f"cd {shlex.quote(cwd)} && {command}" if cwd else command

    def _gang_entrypoint(self, launch: Launch) -> str:
        gang = {  # no environment here: it travels in runtime_env (the ranks inherit it), not in a logged command
            "argv": self._argv(launch.argv),
            "processes": launch.processes,
            "cpu": launch.resources.cpu,
            "memory_gb": launch.resources.memory_gb,
            "gpu": launch.resources.gpu,
            "grace_seconds": launch.grace_seconds,
            "cwd": launch.cwd,
        }
        argv = [sys.executable, "-m", "recplane.scheduler.backends.ray_gang", json.dumps(gang)]
        return self._entrypoint(argv, launch.cwd)

    def _client_or_connect(self) -> JobSubmissionClient:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address, headers=dict(self._headers))
            except (ConnectionError, OSError) as exc:
                raise BackendUnavailable(f"No Ray cluster at {self.address}: {_HINT}.") from exc
            except Exception as exc:  # Ray's AuthenticationError and version checks: say what it said
                raise BackendUnavailable(f"Cannot use the Ray cluster at {self.address}: {exc}") from exc
        return self._client

    def _call(self, action: Any, what: str) -> Any:
        """Run ``action(client)``; a lost connection becomes BackendUnavailable (and reconnects next time)."""
        client = self._client_or_connect()
        try:
            return action(client)
        except (ConnectionError, OSError) as exc:
            self._client = None
            raise BackendUnavailable(f"No Ray cluster at {self.address} (to {what}): {_HINT}.") from exc
        except Exception as exc:  # HTTP errors come as RuntimeError (status and text), auth failures as Ray's own
            raise BackendUnavailable(f"The Ray cluster at {self.address} refused to {what}: {exc}") from exc

    def _info(self, handle: dict[str, Any]) -> Any:
        """The Ray job's details, or None when the cluster does not know it."""
        try:
            return self._call(lambda client: client.get_job_info(handle["submission_id"]), "read job status")
        except BackendUnavailable as exc:
            if "status code 404" in exc.message:
                return None
            raise

    def _nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes, from the state API the dashboard serves."""
        from ray.util.state import StateApiClient
        from ray.util.state.common import ListApiOptions, StateResource

        self._client_or_connect()  # the clear "no cluster" error first
        try:
            client = StateApiClient(self.address, headers={"Content-Type": "application/json", **self._headers})
            nodes = client.list(StateResource.NODES, options=ListApiOptions(detail=True),
                                raise_on_missing_output=False)
        except (ConnectionError, OSError) as exc:
            self._client = None
            raise BackendUnavailable(f"No Ray cluster at {self.address}: {_HINT}.") from exc
        except Exception as exc:  # the state API raises its own error types for HTTP failures
            raise BackendUnavailable(f"Cannot list the nodes of the Ray cluster at {self.address}: {exc}") from exc
        return [_as_dict(node) for node in nodes]


def _as_dict(node: Any) -> dict[str, Any]:
    return node if isinstance(node, dict) else {"state": node.state, "resources_total": node.resources_total}


def _reservation(resources: Resources) -> dict[str, Any]:
    """What the job's entrypoint reserves on the cluster (Ray places it on a node that has it free)."""
    options: dict[str, Any] = {}
    if resources.cpu > 0:
        options["entrypoint_num_cpus"] = resources.cpu
    if resources.gpu > 0:
        options["entrypoint_num_gpus"] = resources.gpu
    if resources.memory_gb > 0:
        options["entrypoint_memory"] = int(resources.memory_gb * _GB)
    return options


def _exit_code(status: str, driver_exit_code: int | None) -> int:
    if status == "SUCCEEDED":
        return 0
    if driver_exit_code is not None:
        return int(driver_exit_code)
    return _STOPPED_EXIT if status == "STOPPED" else 1  # FAILED before the entrypoint ran (runtime env setup)


def from_settings(settings: Settings) -> RayBackend:
    """The Ray backend of these settings: the dashboard at ``scheduler_ray_address`` (else RAY_ADDRESS)."""
    address = settings.scheduler_ray_address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    return RayBackend(address)
