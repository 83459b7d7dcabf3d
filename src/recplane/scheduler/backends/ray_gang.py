"""The driver of a gang job attempt on Ray: one rank per placement-group bundle, ready for ``torch.distributed``.

:class:`~recplane.scheduler.backends.ray.RayBackend` submits ``python -m recplane.scheduler.backends.ray_gang
GANG_JSON`` as the Ray job of an attempt with several processes. This driver (running inside the cluster, so
``ray.init()`` joins the cluster the job runs in):

1. reserves one bundle of the launch's per-process resources per rank in a placement group, so the gang starts
   all at once or not at all (what Ray Train's ``TorchTrainer`` does for its workers);
2. starts one actor per bundle, each running the launch's command as a subprocess with ``RECPLANE_WORKER_RANK``/
   ``RECPLANE_WORKERS`` and the ``torch.distributed`` environment (``MASTER_ADDR``/``MASTER_PORT`` of rank 0's
   node, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``), so ``init_process_group("env://")``
   rendezvouses across nodes; the ranks' output reaches this driver's log through Ray's log streaming;
3. fails the gang as one: the first rank to exit non-zero stops the others (SIGTERM, SIGKILL after the grace);
   a stop of the Ray job (SIGTERM to this driver) is forwarded to every rank the same way.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import psutil

__all__ = ["GangRank", "main"]

STOPPED_EXIT = 143  # 128 + SIGTERM, as the local backend's ranks report a stop
_LOST_RANK_EXIT = -9  # the rank's actor died (its node went away, or it was killed)
_GB = 1e9
_LOG_FLUSH_SECONDS = 1.0  # Ray streams worker output to the driver every few hundred ms: let the last lines in


class GangRank:
    """One rank: runs the command as a child process of this Ray actor and stops it on request."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def where(self) -> tuple[str, int]:
        """This node's address and a free port on it (rank 0's become the rendezvous point)."""
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))
            port = int(probe.getsockname()[1])
        return str(ray.util.get_node_ip_address()), port

    def run(self, argv: list[str], env: dict[str, str], cwd: str | None) -> int:
        """Run the rank to its end; its exit code (negative: the signal that ended it)."""
        import os

        # Same process group as this worker: if Ray kills the worker, the rank goes with it.
        self.process = subprocess.Popen(argv, env={**os.environ, **env}, cwd=cwd, stdin=subprocess.DEVNULL)
        return self.process.wait()

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM the rank's process tree, SIGKILL what is left after ``grace_seconds``."""
        if self.process is None or self.process.poll() is not None:
            return
        tree = _tree(self.process.pid)
        _signal(tree, signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=grace_seconds)
        _signal(alive, signal.SIGKILL)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal(processes: Sequence[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.NoSuchProcess:
            continue


def _bundle(spec: dict[str, Any]) -> dict[str, float]:
    bundle = {"CPU": float(spec["cpu"]), "GPU": float(spec["gpu"]), "memory": float(spec["memory_gb"]) * _GB}
    bundle = {key: value for key, value in bundle.items() if value > 0}
    return bundle or {"CPU": 0.001}  # Ray refuses empty bundles; a token amount keeps one bundle per rank


def _rank_env(spec: dict[str, Any], rank: int, nodes: list[str], master: tuple[str, int]) -> dict[str, str]:
    count = int(spec["processes"])
    node = nodes[rank]
    return {
        **spec.get("env", {}),  # the attempt's environment comes with the job's runtime_env; this adds to it
        "RECPLANE_WORKER_RANK": str(rank),
        "RECPLANE_WORKERS": str(count),
        "MASTER_ADDR": master[0],
        "MASTER_PORT": str(master[1]),
        "RANK": str(rank),
        "WORLD_SIZE": str(count),
        "LOCAL_RANK": str(nodes[:rank].count(node)),
        "LOCAL_WORLD_SIZE": str(nodes.count(node)),
    }


class _Gang:
    """The ranks of one attempt, started in a placement group and watched to their end."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.spec = spec
        self.grace = float(spec.get("grace_seconds", 30.0))
        count = int(spec["processes"])
        self.group = placement_group([_bundle(spec)] * count, strategy="PACK")
        self.stop_asked = False
        self.stopping = False
        rank_class = ray.remote(max_concurrency=2)(GangRank)  # type: ignore[call-overload]  # threaded: stop() runs while run() waits
        self.ranks = [
            rank_class.options(
                num_cpus=float(spec["cpu"]),
                num_gpus=float(spec["gpu"]),
                memory=int(float(spec["memory_gb"]) * _GB) or None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=rank),
            ).remote()
            for rank in range(count)
        ]

    def wait_until_placed(self) -> bool:
        """Block until every bundle is reserved; False when a stop came first."""
        import ray

        print(f"recplane: reserving {len(self.ranks)} x {_bundle(self.spec)} on the Ray cluster", flush=True)
        ready = self.group.ready()
        while not self.stop_asked:
            done, _ = ray.wait([ready], timeout=0.5)
            if done:
                return True
        return False

    def start(self) -> dict[Any, int]:
        """Start every rank with the rendezvous of rank 0's node; returns the run references by rank."""
        import ray

        places = ray.get([rank.where.remote() for rank in self.ranks])
        nodes = [address for address, _ in places]
        master = places[0]
        print(f"recplane: gang of {len(self.ranks)} on {sorted(set(nodes))}, rendezvous {master[0]}:{master[1]}",
              flush=True)
        return {
            rank.run.remote(self.spec["argv"], _rank_env(self.spec, index, nodes, master), self.spec.get("cwd")): index
            for index, rank in enumerate(self.ranks)
        }

    def stop_all(self) -> None:
        """Forward a stop to every rank (each waits its grace, then kills)."""
        if not self.stopping:
            self.stopping = True
            for rank in self.ranks:
                rank.stop.remote(self.grace)

    def watch(self, runs: dict[Any, int]) -> int:
        """Wait for every rank; the gang's exit code (the first failure's, 0 when all succeeded)."""
        import ray

        pending, first_failure = list(runs), None
        while pending:
            if self.stop_asked:
                self.stop_all()
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for reference in done:
                code = _exit_of(reference)
                print(f"recplane: rank {runs[reference]} exited with code {code}", flush=True)
                if code != 0 and first_failure is None:
                    first_failure = code
                    self.stop_all()
        if self.stop_asked:
            return STOPPED_EXIT
        return 0 if first_failure is None else first_failure

    def close(self) -> None:
        """Give back the reservation."""
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.group)


def _exit_of(reference: Any) -> int:
    import ray

    try:
        return int(ray.get(reference))
    except ray.exceptions.RayError as exc:
        print(f"recplane: a rank was lost: {exc}", flush=True)
        return _LOST_RANK_EXIT


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gang described by the JSON argument to its end; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m recplane.scheduler.backends.ray_gang GANG_JSON", file=sys.stderr)
        return 2
    import ray

    ray.init(log_to_driver=True, logging_level=logging.WARNING)  # the job's log is for the ranks' output
    gang = _Gang(json.loads(args[0]))
    signal.signal(signal.SIGTERM, lambda *_: setattr(gang, "stop_asked", True))
    try:
        if not gang.wait_until_placed():
            return STOPPED_EXIT
        code = gang.watch(gang.start())
        time.sleep(_LOG_FLUSH_SECONDS)
        return code
    finally:
        gang.close()
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
