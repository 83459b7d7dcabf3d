"""The kubernetes backend's manifests, validated offline: no cluster runs here.

Every rendered Job is validated against the Kubernetes API's own JSON schema (the ``kubernetes-validate``
package bundles the schemas generated from the API server's OpenAPI document, one set per Kubernetes version;
*strict* sets reject unknown fields) for the oldest and newest versions it ships, and round-trips through the
official client's ``V1Job`` model. No installable package ships the Kubeflow training operator's PyTorchJob CRD
schema, so a PyTorchJob is checked as far as real schemas reach: each replica's pod template is validated as a
core ``PodTemplate`` and round-trips through ``V1PodTemplateSpec``; the PyTorchJob envelope (replica layout, run
policy) is asserted field by field below.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from recplane.config import Settings
from recplane.errors import BackendUnavailable, InvalidSpec
from recplane.scheduler.admission import Resources
from recplane.scheduler.backends import open_backend
from recplane.scheduler.backends.kubernetes import (
    KubernetesBackend,
    ManifestOptions,
    label_value,
    nodes_capacity,
    pods_usage,
)
from recplane.scheduler.backends.protocol import Launch

VERSIONS = sorted(set(kubernetes_validate.utils.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
CHECKED_VERSIONS = [VERSIONS[0], VERSIONS[-1]]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # the API server's IsDNS1123Label
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # its IsValidLabelValue

OPTIONS = ManifestOptions(namespace="recsys-jobs", image="ghcr.io/acme/recplane:0.1.0", service_account="recplane",
                          image_pull_policy="IfNotPresent")
ENV = {"RECPLANE_DATABASE_URL": "postgresql://recplane@db/recplane", "RECPLANE_JOB_ID": "3f2a9c0b1d4e",
       "OMP_NUM_THREADS": "2"}


def launch(**changes: Any) -> Launch:
    base: dict[str, Any] = {
        "job_id": "3f2a9c0b1d4e", "attempt": 1,
        "argv": [sys.executable, "-m", "recplane.scheduler.entrypoint", "3f2a9c0b1d4e"],
        "env": ENV, "resources": Resources(2, 8, 0),
        "labels": {"team": "recsys", "queue": "recsys", "kind": "custom"},
    }
    return Launch(**{**base, **changes})


LAUNCHES = {
    "cpu-job": launch(),
    "gpu-train-with-timeout": launch(resources=Resources(2.5, 16.5, 1), timeout_seconds=3600, attempt=3,
                                     labels={"team": "recsys", "queue": "gpu", "kind": "train"}),
    "no-resources-command": launch(argv=["bash", "-c", "echo hi"], resources=Resources(0, 0, 0), labels={}),
    "odd-team-name": launch(labels={"team": "Recsys Team/EU", "queue": "eu.batch_1", "kind": "custom"},
                            grace_seconds=12.5),
    "fractional-gpu": launch(resources=Resources(0.25, 0.5, 0.5)),
}
GANGS = {
    "gang-of-2": launch(processes=2, resources=Resources(1, 4, 0)),
    "gpu-gang-of-4": launch(processes=4, resources=Resources(4, 32, 1), timeout_seconds=7200),
}


def backend() -> KubernetesBackend:
    return KubernetesBackend(OPTIONS)


def round_trip(manifest: dict[str, Any], model: str) -> dict[str, Any]:
    """Deserialize into the official client's model and serialize back, as the client does on the wire."""
    api = client.ApiClient()
    return dict(api.sanitize_for_serialization(api.deserialize(json.dumps(manifest), model, "application/json")))


def as_pod_template(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


@pytest.mark.parametrize("version", CHECKED_VERSIONS)
@pytest.mark.parametrize("name", sorted(LAUNCHES))
def test_jobs_validate_against_the_kubernetes_api_schema(name: str, version: str) -> None:
    manifest = backend().render(LAUNCHES[name])
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("name", sorted(LAUNCHES))
def test_jobs_round_trip_through_the_official_client_model(name: str) -> None:
    manifest = backend().render(LAUNCHES[name])
    assert round_trip(manifest, "V1Job") == manifest  # nothing dropped as unknown, every type accepted
    assert client.V1Job.model_validate(manifest).spec.backoff_limit == 0  # the body submit() sends


def test_the_validator_rejects_what_the_api_server_would() -> None:
    manifest = backend().render(LAUNCHES["cpu-job"])
    misspelt = copy.deepcopy(manifest)
    misspelt["spec"]["backofLimit"] = misspelt["spec"].pop("backoffLimit")
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["command"] = "python -m recplane"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, CHECKED_VERSIONS[-1], strict=True)
    assert round_trip(misspelt, "V1Job") != misspelt  # the client model drops the unknown field


def test_a_job_carries_the_attempt_command_environment_resources_and_limits() -> None:
    manifest = backend().render(LAUNCHES["gpu-train-with-timeout"])
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0  # the scheduler retries, not Kubernetes
    assert spec["activeDeadlineSeconds"] == 3600 + 30 + 60  # timeout + grace + margin: the scheduler stops it first
    assert spec["ttlSecondsAfterFinished"] == OPTIONS.ttl_seconds_after_finished
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "recplane"
    assert pod["terminationGracePeriodSeconds"] == 30
    (container,) = pod["containers"]
    assert container["image"] == OPTIONS.image and container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["python", "-m", "recplane.scheduler.entrypoint", "3f2a9c0b1d4e"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == {**ENV, "RECPLANE_WORKER_RANK": "0", "RECPLANE_WORKERS": "1"}
    assert container["resources"] == {
        "requests": {"cpu": "2500m", "memory": "16500M", "nvidia.com/gpu": "1"},
        "limits": {"memory": "16500M", "nvidia.com/gpu": "1"},
    }
    labels = manifest["metadata"]["labels"]
    assert labels == spec["template"]["metadata"]["labels"]  # pods are found by the same labels
    assert labels["recplane.dev/job-id"] == "3f2a9c0b1d4e" and labels["recplane.dev/attempt"] == "3"
    assert (labels["recplane.dev/team"], labels["recplane.dev/queue"], labels["recplane.dev/kind"]) == (
        "recsys", "gpu", "train")
    assert "resources" not in backend().render(LAUNCHES["no-resources-command"])["spec"]["template"]["spec"][
        "containers"][0]
    fractional = backend().render(LAUNCHES["fractional-gpu"])["spec"]["template"]["spec"]["containers"][0]
    assert fractional["resources"]["requests"] == {"cpu": "250m", "memory": "500M", "nvidia.com/gpu": "1"}


@pytest.mark.parametrize("name", sorted({**LAUNCHES, **GANGS}))
def test_names_and_labels_are_what_the_api_server_accepts(name: str) -> None:
    manifest = backend().render({**LAUNCHES, **GANGS}[name])
    assert DNS_LABEL.match(manifest["metadata"]["name"]) and len(manifest["metadata"]["name"]) <= 63
    for value in manifest["metadata"]["labels"].values():
        assert LABEL_VALUE.match(value) and len(value) <= 63, value


def test_label_values_keep_the_exact_names_in_annotations() -> None:
    manifest = backend().render(LAUNCHES["odd-team-name"])
    assert manifest["metadata"]["labels"]["recplane.dev/team"] == "Recsys-Team-EU"
    assert manifest["metadata"]["annotations"]["recplane.dev/team"] == "Recsys Team/EU"
    assert label_value("x" * 100 + "!") == "x" * 63
    assert label_value("---") == "none"
    long_id = backend().render(launch(job_id="J" * 80, attempt=12))["metadata"]["name"]
    assert long_id.endswith("-12") and len(long_id) == 63 and DNS_LABEL.match(long_id)


@pytest.mark.parametrize("version", CHECKED_VERSIONS)
@pytest.mark.parametrize("name", sorted(GANGS))
def test_pytorchjob_pod_templates_validate_against_the_core_schema(name: str, version: str) -> None:
    manifest = backend().render(GANGS[name])
    for role, replica in manifest["spec"]["pytorchReplicaSpecs"].items():
        template = replica["template"]
        kubernetes_validate.validate(as_pod_template(template, f"{name}-{role.lower()}"), version, strict=True)
        assert round_trip(template, "V1PodTemplateSpec") == template


@pytest.mark.parametrize("name", sorted(GANGS))
def test_a_gang_is_a_pytorchjob_with_one_master_and_the_rest_workers(name: str) -> None:
    gang = GANGS[name]
    manifest = backend().render(gang)
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    spec = manifest["spec"]
    assert set(spec) == {"runPolicy", "pytorchReplicaSpecs"}
    assert spec["runPolicy"]["backoffLimit"] == 0 and spec["runPolicy"]["cleanPodPolicy"] == "None"
    replicas = spec["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == gang.processes - 1
    for replica in replicas.values():
        assert replica["restartPolicy"] == "Never"
        (container,) = replica["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # where the training operator injects MASTER_ADDR, RANK ...
        assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
        assert container["command"][:2] == ["/bin/sh", "-c"]
        assert container["command"][4:] == ["python", "-m", "recplane.scheduler.entrypoint", "3f2a9c0b1d4e"]
    if gang.timeout_seconds is not None:
        assert spec["runPolicy"]["activeDeadlineSeconds"] == int(gang.timeout_seconds) + 30 + 60


def test_the_rank_prologue_turns_the_operators_variables_into_recplane_ranks() -> None:
    import subprocess

    command = backend().render(GANGS["gang-of-2"])["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"][
        "containers"][0]["command"]
    code = "import os; print(os.environ['RECPLANE_WORKER_RANK'], os.environ['RECPLANE_WORKERS'])"
    probe = [sys.executable, "-c", code]
    shell = [*command[:4], *probe]  # the same /bin/sh prologue, running a probe instead of the job
    done = subprocess.run(shell, env={"RANK": "1", "WORLD_SIZE": "2", "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, check=True)
    assert done.stdout.split() == ["1", "2"]


def node(ready: str, cpu: str, memory: str, gpu: str | None = None, unschedulable: bool = False) -> Any:
    allocatable = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": gpu} if gpu else {})}
    data = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n{cpu}"},
            "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": allocatable, "conditions": [{"type": "Ready", "status": ready}]}}
    return client.ApiClient().deserialize(json.dumps(data), "V1Node", "application/json")


def test_capacity_sums_the_ready_schedulable_nodes() -> None:
    nodes = [node("True", "3920m", "16Gi"), node("True", "8", "32G", gpu="2"), node("False", "64", "256Gi"),
             node("True", "64", "256Gi", unschedulable=True)]
    capacity = nodes_capacity(nodes)
    assert capacity.cpu == pytest.approx(11.92)
    assert capacity.memory_gb == pytest.approx(16 * 2**30 / 1e9 + 32)
    assert capacity.gpu == 2


def test_usage_is_the_pods_wall_time_with_requested_resources() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def pod(name: str, began: float, ended: float | None) -> Any:
        state = ({"terminated": {"exitCode": 0, "startedAt": (start + timedelta(seconds=began)).isoformat(),
                                 "finishedAt": (start + timedelta(seconds=ended)).isoformat()}}
                 if ended is not None else {"running": {"startedAt": (start + timedelta(seconds=began)).isoformat()}})
        data = {"metadata": {"name": name},
                "status": {"containerStatuses": [{"name": "pytorch", "image": "i", "imageID": "", "ready": False,
                                                  "restartCount": 0, "state": state}]}}
        return client.ApiClient().deserialize(json.dumps(data), "V1Pod", "application/json")

    handle = {"cpu": 2.0, "memory_gb": 4.0}
    usage = pods_usage([pod("m", 0, 100), pod("w", 10, 90)], handle, now=0)
    assert usage.wall_seconds == 100 and usage.cpu_seconds == 2 * 180 and usage.memory_gb_seconds == 4 * 180
    running = pods_usage([pod("m", 0, None)], handle, now=(start + timedelta(seconds=30)).timestamp())
    assert running.wall_seconds == 30


def test_the_backend_is_opened_from_settings_and_needs_an_image(tmp_path: Any) -> None:
    with pytest.raises(InvalidSpec, match="RECPLANE_SCHEDULER_KUBERNETES_IMAGE"):
        open_backend("kubernetes", Settings(home=tmp_path))
    opened = open_backend("kubernetes", Settings(home=tmp_path, scheduler_kubernetes_image="repo/recplane:1",
                                                 scheduler_kubernetes_namespace="ml"))
    assert isinstance(opened, KubernetesBackend)
    assert opened.render(LAUNCHES["cpu-job"])["metadata"]["namespace"] == "ml"


def test_an_unreachable_api_server_is_a_clear_error_and_holds_jobs(tmp_path: Any) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "me"}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
    }))
    unreachable = KubernetesBackend(OPTIONS, kubeconfig=str(kubeconfig))
    with pytest.raises(BackendUnavailable, match=f"Cannot reach the Kubernetes API at http://127.0.0.1:{port}"):
        unreachable.submit(LAUNCHES["cpu-job"])
    assert unreachable.capacity() == Resources()  # its queues hold their jobs instead of failing them
    handle = {"kind": "Job", "namespace": "recsys-jobs", "name": "recplane-x-1", "selector": "a=b"}
    status = unreachable.poll(handle)
    assert status.running and "Cannot reach" in status.detail["unreachable"]
    missing = KubernetesBackend(OPTIONS, kubeconfig=str(tmp_path / "absent"))
    with pytest.raises(BackendUnavailable, match="No Kubernetes configuration"):
        missing.submit(LAUNCHES["cpu-job"])


@pytest.mark.parametrize("version", CHECKED_VERSIONS)
def test_a_data_parallel_training_job_is_one_pod_requesting_all_its_workers(tmp_path: Any, version: str) -> None:
    from recplane.catalog import Catalog
    from recplane.scheduler import Scheduler

    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir(parents=True)
    catalog = Catalog(settings.catalog_url)
    try:
        scheduler = Scheduler(catalog, settings)
        job = scheduler.submit({"kind": "train", "resources": {"cpu": 1.5, "memory_gb": 4, "gpu": 1}, "args": {
            "spec": {"dataset": "ratings", "workers": 4, "train": {"model": "mf", "params": {"dim": 8}}}}})
        manifest = backend().render(scheduler.rounds._launch(scheduler.store.record(job.id), 1))
    finally:
        catalog.close()
    kubernetes_validate.validate(manifest, version, strict=True)
    assert manifest["kind"] == "Job"  # the trainer starts its 4 workers inside the one pod
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {"requests": {"cpu": "6000m", "memory": "16000M", "nvidia.com/gpu": "4"},
                                      "limits": {"memory": "16000M", "nvidia.com/gpu": "4"}}
