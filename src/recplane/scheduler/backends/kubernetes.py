"""The Kubernetes backend: each job attempt is a ``batch/v1`` Job, or a Kubeflow ``PyTorchJob`` for a gang.

Manifests are rendered as plain JSON (:meth:`KubernetesBackend.render`) and created with the official client:

* one process → a Job with ``backoffLimit: 0`` (the scheduler retries, not Kubernetes), the launch's command and
  environment, CPU/memory/GPU requests (memory and GPU also as limits; no CPU limit, so jobs are not throttled
  below what they asked for), ``activeDeadlineSeconds`` of the job's timeout plus its grace (a safety net for
  when the control plane is down: the scheduler stops timed-out jobs itself), ``ttlSecondsAfterFinished``, and
  labels naming the recplane job, attempt, team, queue and kind on the Job and its pods;
* several processes → a ``kubeflow.org/v1`` PyTorchJob (Master + Workers; the training operator must be
  installed) whose pods get ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE`` from the operator; a small
  shell prologue turns those into ``RECPLANE_WORKER_RANK``/``RECPLANE_WORKERS``.

The container runs the launch's command with the image's ``python`` in place of the control plane's
interpreter, so the image needs recplane installed, and the environment's catalog and lake (PostgreSQL, object
storage) must be reachable from the pods. Status, logs and usage come from the API: the Job's (or PyTorchJob's)
conditions and its pods' container states. Usage is wall-based: pods' running time from their container start
and finish times, CPU and memory *estimated* as requested x wall (no metrics server is assumed). Cancel deletes
the object (pods get SIGTERM, then SIGKILL after the grace period).

No cluster runs in this project's tests: they validate the rendered manifests against the Kubernetes API's
JSON schema and the client's models, offline.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recplane.config import Settings
from recplane.errors import BackendUnavailable, InvalidSpec
from recplane.scheduler.admission import Resources
from recplane.scheduler.backends.protocol import BackendStatus, Launch, LogChunk, ResourceUsage

__all__ = ["KubernetesBackend", "ManifestOptions", "from_settings", "label_value", "nodes_capacity", "object_name",
           "pods_usage"]

log = logging.getLogger("recplane.scheduler.kubernetes")

PYTORCHJOB = ("kubeflow.org", "v1", "pytorchjobs")
LABEL = "recplane.dev/"
GPU_RESOURCE = "nvidia.com/gpu"
_PYTORCH_CONTAINER = "pytorch"  # the training operator sets its rendezvous variables in the container of this name
_PYTORCH_PORT = 23456  # the operator's default rendezvous port, declared so every version finds it
_RANK_PROLOGUE = 'export RECPLANE_WORKER_RANK="${RANK:-0}" RECPLANE_WORKERS="${WORLD_SIZE:-1}"; exec "$@"'
_DELETED_EXIT = -15  # the object is gone: deleted by a cancel (pods got SIGTERM), or by someone else
_DEADLINE_MARGIN_SECONDS = 60
_GB = 1e9
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ManifestOptions:
    """Where and how attempts run: namespace, image, its interpreter, and cluster-side settings."""

    namespace: str = "default"
    image: str = "recplane:latest"
    python: str = "python"
    service_account: str | None = None
    image_pull_policy: str | None = None
    ttl_seconds_after_finished: int = 86400


def label_value(text: str) -> str:
    """``text`` as a valid label value: at most 63 of ``[A-Za-z0-9_.-]``, starting and ending alphanumeric."""
    value = _LABEL_VALUE.sub("-", text)[:63].strip("-_.")
    return value or "none"


def object_name(launch: Launch) -> str:
    """The attempt's object name: a DNS-1123 label (lowercase, digits, '-'; at most 63 characters)."""
    job = re.sub(r"[^a-z0-9-]+", "-", launch.job_id.lower()).strip("-")
    suffix = f"-{launch.attempt}"
    return f"recplane-{job}"[: 63 - len(suffix)].rstrip("-") + suffix


def _labels(launch: Launch) -> dict[str, str]:
    labels = {"app.kubernetes.io/managed-by": "recplane", f"{LABEL}job-id": label_value(launch.job_id),
              f"{LABEL}attempt": str(launch.attempt)}
    labels.update({f"{LABEL}{key}": label_value(value) for key, value in sorted(launch.labels.items())})
    return labels


def _selector(launch_labels: dict[str, str]) -> str:
    return ",".join(f"{key}={launch_labels[key]}" for key in (f"{LABEL}job-id", f"{LABEL}attempt"))


def _quantities(resources: Resources) -> dict[str, dict[str, str]]:
    """Requests and limits: CPU in millicores (requested only), memory in MB and whole GPUs (both also limits)."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.cpu > 0:
        requests["cpu"] = f"{max(1, round(resources.cpu * 1000))}m"
    if resources.memory_gb > 0:
        requests["memory"] = limits["memory"] = f"{max(1, round(resources.memory_gb * 1000))}M"
    if resources.gpu > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(math.ceil(resources.gpu))  # GPUs are whole devices
    quantities = {"requests": requests, "limits": limits}
    return {key: value for key, value in quantities.items() if value}


class KubernetesBackend:
    """Job attempts as Jobs (one process) or PyTorchJobs (gangs) in one namespace of a Kubernetes cluster."""

    name = "kubernetes"

    def __init__(
        self,
        options: ManifestOptions,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        api_client: Any = None,
    ) -> None:
        try:
            import kubernetes  # noqa: F401  (fail now, with the install hint, not at the first job)
        except ImportError as exc:
            raise BackendUnavailable("The kubernetes job backend needs the client: pip install "
                                     "'recplane[kubernetes]'") from exc
        self.options = options
        self.kubeconfig, self.context = kubeconfig, context
        self._api_client = api_client
        self._last_usage: dict[str, ResourceUsage] = {}  # pods vanish with a deleted object: keep what was seen
        self._warned = False

    # --- manifests (no cluster needed) ---

    def render(self, launch: Launch) -> dict[str, Any]:
        """The attempt's manifest: a batch/v1 Job, or a kubeflow.org/v1 PyTorchJob when it has several processes."""
        return self._pytorchjob(launch) if launch.processes > 1 else self._job(launch)

    def _container(self, launch: Launch, name: str, env: dict[str, str], prologue: bool) -> dict[str, Any]:
        argv = [self.options.python if arg == sys.executable else arg for arg in launch.argv[:1]] + launch.argv[1:]
        container: dict[str, Any] = {
            "name": name,
            "image": self.options.image,
            "command": ["/bin/sh", "-c", _RANK_PROLOGUE, "recplane-rank", *argv] if prologue else argv,
            "env": [{"name": key, "value": value} for key, value in sorted(env.items())],
        }
        resources = _quantities(launch.resources)
        if resources:
            container["resources"] = resources
        if self.options.image_pull_policy:
            container["imagePullPolicy"] = self.options.image_pull_policy
        return container

    def _pod_template(self, launch: Launch, container: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": math.ceil(launch.grace_seconds),
            "containers": [container],
        }
        if self.options.service_account:
            spec["serviceAccountName"] = self.options.service_account
        return {"metadata": {"labels": _labels(launch)}, "spec": spec}

    def _metadata(self, launch: Launch) -> dict[str, Any]:
        annotations = {f"{LABEL}{key}": value for key, value in sorted(launch.labels.items())}
        metadata: dict[str, Any] = {"name": object_name(launch), "namespace": self.options.namespace,
                                    "labels": _labels(launch)}
        if annotations:
            metadata["annotations"] = annotations  # the exact team/queue names (labels are sanitised)
        return metadata

    def _deadline(self, launch: Launch) -> int | None:
        if launch.timeout_seconds is None:
            return None
        return math.ceil(launch.timeout_seconds + launch.grace_seconds) + _DEADLINE_MARGIN_SECONDS

    def _job(self, launch: Launch) -> dict[str, Any]:
        env = {**launch.env, "RECPLANE_WORKER_RANK": "0", "RECPLANE_WORKERS": "1"}
        spec: dict[str, Any] = {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": self.options.ttl_seconds_after_finished,
            "template": self._pod_template(launch, self._container(launch, "job", env, prologue=False)),
        }
        deadline = self._deadline(launch)
        if deadline is not None:
            spec["activeDeadlineSeconds"] = deadline
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": self._metadata(launch), "spec": spec}

    def _pytorchjob(self, launch: Launch) -> dict[str, Any]:
        container = self._container(launch, _PYTORCH_CONTAINER, dict(launch.env), prologue=True)
        container["ports"] = [{"name": "pytorchjob-port", "containerPort": _PYTORCH_PORT}]
        template = self._pod_template(launch, container)
        run_policy: dict[str, Any] = {"backoffLimit": 0, "cleanPodPolicy": "None",
                                      "ttlSecondsAfterFinished": self.options.ttl_seconds_after_finished}
        deadline = self._deadline(launch)
        if deadline is not None:
            run_policy["activeDeadlineSeconds"] = deadline
        replicas = {
            "Master": {"replicas": 1, "restartPolicy": "Never", "template": template},
            "Worker": {"replicas": launch.processes - 1, "restartPolicy": "Never", "template": template},
        }
        group, version, _ = PYTORCHJOB
        return {"apiVersion": f"{group}/{version}", "kind": "PyTorchJob", "metadata": self._metadata(launch),
                "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": replicas}}

    # --- the JobBackend protocol ---

    def capacity(self) -> Resources:
        """Allocatable resources of the Ready, schedulable nodes; nothing (jobs wait) when they cannot be listed."""
        from kubernetes import client

        try:
            nodes = self._call(lambda api: client.CoreV1Api(api).list_node().items, "list nodes")
        except BackendUnavailable as exc:
            if not self._warned:
                log.warning("%s; queues on the kubernetes backend hold their jobs", exc.message)
                self._warned = True
            return Resources()
        self._warned = False
        return nodes_capacity(nodes)

    def submit(self, launch: Launch) -> dict[str, Any]:
        """Create the attempt's Job or PyTorchJob (one that already exists under its name is adopted)."""
        from kubernetes import client

        manifest = self.render(launch)
        namespace, kind, name = self.options.namespace, manifest["kind"], manifest["metadata"]["name"]
        group, version, plural = PYTORCHJOB

        def create(api: Any) -> Any:
            if kind == "Job":
                return client.BatchV1Api(api).create_namespaced_job(namespace, client.V1Job.model_validate(manifest))
            return client.CustomObjectsApi(api).create_namespaced_custom_object(
                group, version, namespace, plural, manifest)

        try:
            self._call(create, f"create {kind} {name}")
        except _Conflict:
            log.info("%s %s exists already; adopting it", kind, name)
        return {
            "kind": kind, "namespace": namespace, "name": name,
            "selector": _selector(manifest["metadata"]["labels"]), "processes": launch.processes,
            "cpu": launch.resources.cpu, "memory_gb": launch.resources.memory_gb, "gpu": launch.resources.gpu,
        }

    def poll(self, handle: dict[str, Any]) -> BackendStatus:
        """Complete/Succeeded exits 0; Failed with its pod's exit code; a deleted object as stopped by SIGTERM."""
        try:
            conditions = self._conditions(handle)
        except _Missing:
            return BackendStatus(running=False, exit_code=_DELETED_EXIT, detail={"deleted": True})
        except BackendUnavailable as exc:
            return BackendStatus(running=True, detail={"unreachable": exc.message})
        detail = {"conditions": conditions, "name": handle["name"]}
        self._remember_usage(handle)
        if conditions.get("Complete") == "True" or conditions.get("Succeeded") == "True":
            return BackendStatus(running=False, exit_code=0, detail=detail)
        if conditions.get("Failed") == "True":
            return BackendStatus(running=False, exit_code=self._failed_exit_code(handle), detail=detail)
        return BackendStatus(running=True, detail=detail)

    def cancel(self, handle: dict[str, Any], *, grace_seconds: float) -> None:
        """Delete the object (its pods get SIGTERM, SIGKILL after their grace); grace 0 deletes the pods at once."""
        from kubernetes import client

        name, namespace = handle["name"], handle["namespace"]
        group, version, plural = PYTORCHJOB

        def delete(api: Any) -> Any:
            if handle["kind"] == "Job":
                return client.BatchV1Api(api).delete_namespaced_job(name, namespace, propagation_policy="Foreground")
            return client.CustomObjectsApi(api).delete_namespaced_custom_object(
                group, version, namespace, plural, name, propagation_policy="Foreground")

        with contextlib.suppress(_Missing):
            self._call(delete, f"delete {handle['kind']} {name}")
        if grace_seconds <= 0:
            for pod in self._safe_pods(handle):
                self._kill_pod(namespace, pod.metadata.name)

    def _kill_pod(self, namespace: str, name: str) -> None:
        from kubernetes import client

        with contextlib.suppress(_Missing):
            self._call(lambda api: client.CoreV1Api(api).delete_namespaced_pod(name, namespace, grace_period_seconds=0),
                       f"kill pod {name}")

    def logs(self, handle: dict[str, Any], offset: int = 0) -> LogChunk:
        """Bytes ``offset..`` of the attempt's pod log (a gang's: the Master's, rank 0)."""
        from kubernetes import client

        pods = sorted(self._safe_pods(handle), key=lambda pod: pod.metadata.name)
        if handle["kind"] != "Job":
            pods = [pod for pod in pods if pod.metadata.name.endswith("-master-0")]
        if not pods:
            return LogChunk("", offset)
        pod = pods[-1]
        try:
            text = self._call(lambda api: client.CoreV1Api(api).read_namespaced_pod_log(
                pod.metadata.name, handle["namespace"]), "read logs")
        except (BackendUnavailable, _Missing):
            return LogChunk("", offset)
        data = str(text).encode("utf-8")[offset:]
        return LogChunk(data.decode("utf-8", errors="replace"), offset + len(data))

    def usage(self, handle: dict[str, Any]) -> ResourceUsage:
        """Wall time from the pods' container start and finish; CPU and memory estimated as requested x wall."""
        return self._remember_usage(handle)

    # --- API access ---

    def _api(self) -> Any:
        if self._api_client is None:
            from kubernetes import client, config

            try:
                if self.kubeconfig is None and self.context is None and _in_cluster():
                    configuration = client.Configuration()
                    config.load_incluster_config(client_configuration=configuration)
                    self._api_client = client.ApiClient(configuration)
                else:
                    self._api_client = config.new_client_from_config(config_file=self.kubeconfig,
                                                                     context=self.context)
            except (config.ConfigException, OSError) as exc:
                raise BackendUnavailable(
                    f"No Kubernetes configuration for the kubernetes job backend ({exc}): set KUBECONFIG or "
                    "RECPLANE_SCHEDULER_KUBERNETES_CONTEXT, or run the control plane in a pod."
                ) from exc
        return self._api_client

    def _call(self, action: Callable[[Any], Any], what: str) -> Any:
        """Run ``action(api_client)``: 404 and 409 become _Missing and _Conflict, other failures BackendUnavailable."""
        from kubernetes.client.exceptions import ApiException

        api = self._api()
        try:
            return action(api)
        except ApiException as exc:
            if exc.status == 404:
                raise _Missing(what) from exc
            if exc.status == 409:
                raise _Conflict(what) from exc
            reason = f"{exc.status} {exc.reason}".strip()
            raise BackendUnavailable(f"Kubernetes refused to {what} in namespace "
                                     f"{self.options.namespace!r}: {reason}") from exc
        except Exception as exc:  # urllib3 connection errors and timeouts: the API server cannot be reached
            host = getattr(getattr(api, "configuration", None), "host", "the API server")
            raise BackendUnavailable(f"Cannot reach the Kubernetes API at {host} to {what}: {exc}") from exc

    def _conditions(self, handle: dict[str, Any]) -> dict[str, str]:
        from kubernetes import client

        name, namespace = handle["name"], handle["namespace"]
        if handle["kind"] == "Job":
            job = self._call(lambda api: client.BatchV1Api(api).read_namespaced_job_status(name, namespace),
                             f"read Job {name}")
            return {c.type: c.status for c in (job.status.conditions or [])} if job.status else {}
        group, version, plural = PYTORCHJOB
        found = self._call(lambda api: client.CustomObjectsApi(api).get_namespaced_custom_object(
            group, version, namespace, plural, name), f"read PyTorchJob {name}")
        conditions = (found.get("status") or {}).get("conditions") or []
        return {str(c.get("type")): str(c.get("status")) for c in conditions}

    def _pods(self, handle: dict[str, Any]) -> list[Any]:
        from kubernetes import client

        pods = self._call(lambda api: client.CoreV1Api(api).list_namespaced_pod(
            handle["namespace"], label_selector=handle["selector"]), "list pods")
        return list(pods.items or [])

    def _safe_pods(self, handle: dict[str, Any]) -> list[Any]:
        try:
            return self._pods(handle)
        except (BackendUnavailable, _Missing):
            return []

    def _failed_exit_code(self, handle: dict[str, Any]) -> int:
        codes = [state.exit_code for state in _terminated_states(self._safe_pods(handle))]
        failed = [code for code in codes if code != 0]
        return int(failed[0]) if failed else 1  # no pod left to say (deadline or eviction): a plain failure

    def _remember_usage(self, handle: dict[str, Any]) -> ResourceUsage:
        pods = self._safe_pods(handle)
        if not pods:
            return self._last_usage.get(handle["name"], ResourceUsage())
        usage = pods_usage(pods, handle, now=time.time())
        self._last_usage[handle["name"]] = usage
        return usage


class _Missing(Exception):
    """The API answered 404."""


class _Conflict(Exception):
    """The API answered 409 (the object exists)."""


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _terminated_states(pods: list[Any]) -> list[Any]:
    states = []
    for pod in pods:
        for status in (pod.status.container_statuses or []) if pod.status else []:
            if status.state is not None and status.state.terminated is not None:
                states.append(status.state.terminated)
    return states


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def pods_usage(pods: list[Any], handle: dict[str, Any], *, now: float) -> ResourceUsage:
    """Wall-based usage of an attempt's pods: the span of their containers, requested resources x pod time."""
    starts, ends, pod_seconds = [], [], 0.0
    for pod in pods:
        for status in (pod.status.container_statuses or []) if pod.status else []:
            state = status.state
            if state is None:
                continue
            if state.terminated is not None:
                start, end = _seconds(state.terminated.started_at), _seconds(state.terminated.finished_at)
            elif state.running is not None:
                start, end = _seconds(state.running.started_at), now
            else:
                continue
            if start is None or end is None:
                continue
            starts.append(start)
            ends.append(end)
            pod_seconds += max(0.0, end - start)
    wall = max(0.0, max(ends) - min(starts)) if starts else 0.0
    return ResourceUsage(
        cpu_seconds=float(handle.get("cpu", 0.0)) * pod_seconds,
        memory_gb_seconds=float(handle.get("memory_gb", 0.0)) * pod_seconds,
        peak_memory_gb=0.0,
        wall_seconds=wall,
    )


def nodes_capacity(nodes: list[Any]) -> Resources:
    """Summed allocatable CPU, memory (GB) and GPUs of the nodes that are Ready and schedulable."""
    from kubernetes.utils import parse_quantity

    total = [0.0, 0.0, 0.0]
    for node in nodes:
        if node.spec is not None and node.spec.unschedulable:
            continue
        conditions = {c.type: c.status for c in (node.status.conditions or [])} if node.status else {}
        if conditions.get("Ready") != "True":
            continue
        allocatable = (node.status.allocatable or {}) if node.status else {}
        total[0] += float(parse_quantity(allocatable.get("cpu", "0")))
        total[1] += float(parse_quantity(allocatable.get("memory", "0"))) / _GB
        total[2] += float(parse_quantity(allocatable.get(GPU_RESOURCE, "0")))
    return Resources(*total)


def from_settings(settings: Settings) -> KubernetesBackend:
    """The Kubernetes backend of these settings (namespace, image, kubeconfig context)."""
    if not settings.scheduler_kubernetes_image:
        raise InvalidSpec(
            "The kubernetes job backend needs an image with recplane installed: set "
            "RECPLANE_SCHEDULER_KUBERNETES_IMAGE (or scheduler_kubernetes_image in recplane.yaml)."
        )
    options = ManifestOptions(namespace=settings.scheduler_kubernetes_namespace,
                              image=settings.scheduler_kubernetes_image)
    return KubernetesBackend(options, context=settings.scheduler_kubernetes_context)

