"""Data-parallel training on one machine: the trainer launches its own worker processes.

``launch(workers, fn, *args)`` starts ``workers`` processes (spawned, so CUDA and threads start clean), joins
them into one torch.distributed group (gloo on CPU, nccl when every worker has its own GPU) over a free
loopback port, runs ``fn(context, *args)`` in each and returns rank 0's return value. Rank 0 can publish events
(the trainer's callback calls) that the launching process handles as they come, so progress bars, run records
and tuning pruners keep working in the caller; if a handler raises, the workers are stopped and the error is
raised. A worker failure is raised in the caller (a recplane error as itself, anything else as
``TrainingFailed`` with the worker's traceback).

How the maths stays the single-process maths: every rank builds the same global batch (same generator, so the
same negatives), trains on its slice of the rows (:func:`shard_rows`), and the gradients are summed weighted by
each slice's share of the batch in one flat all-reduce per step (:func:`all_reduce_gradients`). For losses that
are means over rows, that is exactly the gradient of the whole batch. (We all-reduce by hand rather than wrap
the model in ``DistributedDataParallel`` because several zoo losses use parameters outside ``forward``, which
DDP's hooks do not allow.)
"""

from __future__ import annotations

import os
import pickle
import queue
import socket
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from recplane.errors import InvalidInput, RecplaneError, TrainingFailed, error_from_dict

__all__ = ["WorkerContext", "all_reduce_gradients", "all_reduce_sum", "broadcast_flag", "launch", "shard_rows"]

R = TypeVar("R")
EventHandler = Callable[[Any], None]


@dataclass(frozen=True)
class WorkerContext:
    """Where this process sits in the group, and its channel back to the launching process."""

    rank: int
    world_size: int
    device: torch.device
    channel: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def publish(self, event: Any) -> None:
        """Send an event to the launching process (rank 0 only; others have nothing to say)."""
        if self.is_main and self.channel is not None:
            self.channel.put(("event", _detached(event)))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(
    rank: int,
    world_size: int,
    port: int,
    device_type: str,
    threads: int,
    fn: Callable[..., Any],
    args_file: str,
    channel: Any,
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world_size)
    try:
        with open(args_file, "rb") as file:
            args = pickle.load(file)
        value = fn(WorkerContext(rank, world_size, device, channel), *args)
        if rank == 0:
            channel.put(("result", _detached(value)))
    except BaseException as exc:
        # Exceptions do not all pickle; a recplane error travels as its dict and is rebuilt in the caller.
        original = exc.to_dict() if isinstance(exc, RecplaneError) else None
        channel.put(("error", f"rank {rank}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}", original))
        raise
    finally:
        dist.destroy_process_group()


def launch(
    workers: int, fn: Callable[..., R], *args: Any, device_type: str = "cpu", on_event: EventHandler | None = None
) -> R:
    """Run ``fn(WorkerContext, *args)`` in ``workers`` processes; return rank 0's result.

    ``fn`` and ``args`` must be picklable (a module-level function and plain data, Arrow tables or tensors).
    ``on_event`` receives what rank 0 publishes, in order, in this process. CPU threads are split between the
    workers so they do not oversubscribe the machine.
    """
    if workers < 2:
        raise InvalidInput(f"launch needs at least 2 workers; got {workers}. Train in-process for one.")
    if device_type == "cuda" and torch.cuda.device_count() < workers:
        raise InvalidInput(f"{workers} CUDA workers need {workers} GPUs; this machine has {torch.cuda.device_count()}.")
    threads = max(1, (os.cpu_count() or 1) // workers)
    channel = mp.get_context("spawn").Queue()
    with tempfile.TemporaryDirectory(prefix="recplane-workers-") as folder:
        # The data travels through a file, not the spawn pipe: a child that dies before reading a large pipe
        # payload (a script without `if __name__ == "__main__":`) would block this process forever.
        args_file = os.path.join(folder, "args.pkl")
        with open(args_file, "wb") as file:
            pickle.dump(args, file, protocol=pickle.HIGHEST_PROTOCOL)
        return _run_workers(workers, threads, device_type, fn, args_file, channel, on_event)


def _run_workers(
    workers: int,
    threads: int,
    device_type: str,
    fn: Callable[..., R],
    args_file: str,
    channel: Any,
    on_event: EventHandler | None,
) -> R:
    processes = mp.start_processes(
        _worker,
        args=(workers, _free_port(), device_type, threads, fn, args_file, channel),
        nprocs=workers,
        join=False,
        start_method="spawn",
    )
    outcome: list[Any] = []
    try:
        finished = False
        while not finished:
            try:
                finished = processes.join(timeout=0.05)
            except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
                _drain(channel, on_event, outcome)
                raise _failure(outcome, exc) from exc
            _drain(channel, on_event, outcome)
    except BaseException:
        for process in processes.processes:
            if process.is_alive():
                process.terminate()
        raise
    _drain(channel, on_event, outcome)
    results = [payload for kind, *payload in outcome if kind == "result"]
    if not results:
        raise TrainingFailed("The training workers finished without a result from rank 0.")
    return cast(R, pickle.loads(results[0][0]))


def _detached(value: Any) -> bytes:
    """``value`` pickled by value: torch's queue pickler would share tensors through file descriptors that
    vanish when the worker exits before the caller reads them."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _drain(channel: Any, on_event: EventHandler | None, outcome: list[Any]) -> None:
    """Handle every message waiting on the channel: events go to ``on_event``, results and errors are kept."""
    while True:
        try:
            message = channel.get_nowait()
        except queue.Empty:
            return
        if message[0] == "event":
            if on_event is not None:
                on_event(pickle.loads(message[1]))
        else:
            outcome.append(message)


def _failure(outcome: list[Any], exc: BaseException) -> Exception:
    """The first worker error, re-raised as the original recplane error when it was one."""
    for kind, *payload in outcome:
        if kind == "error":
            message, original = payload
            if original is not None:
                return error_from_dict(original)
            return TrainingFailed(f"A training worker failed: {message}")
    return TrainingFailed(
        f"A training worker failed: {exc}. Its error is printed above. A worker that dies at start-up is often a "
        'script without `if __name__ == "__main__":` around the training call: spawned workers re-import it.'
    )


def shard_rows(num_rows: int, context: WorkerContext) -> tuple[Tensor, float]:
    """This rank's positions in a global batch of ``num_rows`` and its weight (its share of the rows).

    A rank left without rows (a batch smaller than the group) trains on one row with weight 0, so every rank
    still takes part in the step's all-reduce.
    """
    positions = torch.arange(context.rank, num_rows, context.world_size)
    if len(positions) == 0:
        return torch.tensor([num_rows - 1]), 0.0
    return positions, len(positions) / num_rows


def all_reduce_gradients(params: list[Tensor], weight: float, context: WorkerContext) -> None:
    """Replace each parameter's gradient with the weighted sum over ranks, in one flat all-reduce.

    A parameter that no rank produced a gradient for keeps ``grad = None`` (so optimizers skip it as they would
    in a single process); sparse gradients are densified.
    """
    if not params:
        return
    grads = [p.grad.to_dense() if p.grad is not None else torch.zeros_like(p) for p in params]
    present = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) * weight for g in grads] + [present])
    dist.all_reduce(flat)
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        size = grad.numel()
        param.grad = flat[offset : offset + size].view_as(param)  # views of one fresh buffer: no copy
        offset += size
    for param, seen in zip(params, flat[offset:].tolist(), strict=True):
        if seen == 0:
            param.grad = None


def all_reduce_sum(value: float, context: WorkerContext) -> float:
    """The sum of ``value`` over the group."""
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def broadcast_flag(flag: bool, context: WorkerContext) -> bool:
    """Rank 0's ``flag`` on every rank (rank 0 alone decides early stopping)."""
    tensor = torch.tensor([int(flag)], device=context.device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
