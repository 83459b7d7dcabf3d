"""Micro-batching for the request path: many concurrent requests, one model call per group.

The event loop never runs model code. ``MicroBatcher.submit`` puts a request on a queue and returns an awaitable;
worker threads (``threads``, one by default) take the first request waiting, add whatever else is queued up to
``max_batch``, call ``fn`` once for the group and hand each caller its result (or the group's exception) with one
``loop.call_soon_threadsafe`` per group. ``submit_timed`` also tells the caller how long its request waited in the
queue before its group's ``fn`` call began.

Waiting for company: a lone request is never delayed. The worker waits up to ``max_wait_ms`` for more requests
only while the previous group held more than one request, i.e. when there is concurrent traffic to wait for; at
concurrency 1 that wait would be pure added latency, and under load requests pile up while the previous group
runs, so groups form without any wait.

Load shedding: at most ``max_inflight`` requests are queued or running. One more raises :class:`LoadShed` at
once (HTTP 503 with ``Retry-After``) instead of queueing without bound, so an overloaded service answers fast
and recovers as soon as the burst passes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from recplane.errors import InvalidInput, Overloaded

__all__ = ["BatchStats", "LoadShed", "MicroBatcher"]

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")

_STOP = object()


class LoadShed(Overloaded):
    """The service holds as many requests as it may (``max_inflight``): this one is refused, retry shortly."""

    code = "load_shed"
    status = 503


@dataclass(frozen=True)
class BatchStats:
    """What one group cost: its size, the oldest request's wait in the queue and the ``fn`` call's duration."""

    size: int
    queue_wait_s: float
    run_s: float
    failed: bool


@dataclass
class _Pending(Generic[Req, Res]):
    request: Req
    future: asyncio.Future[tuple[Res, float]]  # the result and the seconds the request waited in the queue
    loop: asyncio.AbstractEventLoop
    enqueued: float


class MicroBatcher(Generic[Req, Res]):
    """Groups concurrent ``submit`` calls into calls of ``fn(requests) -> results`` on worker threads."""

    def __init__(
        self,
        fn: Callable[[Sequence[Req]], Sequence[Res]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        max_inflight: int = 256,
        threads: int = 1,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "recplane-batcher",
    ) -> None:
        if max_batch < 1 or max_inflight < 1 or threads < 1 or max_wait_ms < 0:
            raise InvalidInput(
                f"Batcher settings must be positive: max_batch={max_batch}, max_inflight={max_inflight}, "
                f"threads={threads}, max_wait_ms={max_wait_ms}."
            )
        self._fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_inflight = max_inflight
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Counted under a lock: submit runs on the event loop, release on whichever loop owns the request.
        self._inflight = 0
        self._lock = threading.Lock()
        self._closed = False
        self._last_size = 1
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True) for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def inflight(self) -> int:
        """Requests queued or running right now."""
        return self._inflight

    async def submit(self, request: Req) -> Res:
        """Queue ``request`` and wait for its result; raises LoadShed at once when ``max_inflight`` are held."""
        result, _ = await self.submit_timed(request)
        return result

    async def submit_timed(self, request: Req) -> tuple[Res, float]:
        """:meth:`submit`, returning the result and the seconds ``request`` waited in the queue for its group."""
        self._admit()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Res, float]] = loop.create_future()
        self._queue.put(_Pending(request, future, loop, time.perf_counter()))
        return await future

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued requests, then stop the worker threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)

    def _admit(self) -> None:
        with self._lock:
            if self._closed:
                raise LoadShed("The service is shutting down; retry on another replica.", retry_after=1.0)
            if self._inflight >= self.max_inflight:
                raise LoadShed(
                    f"The service is at capacity ({self.max_inflight} requests in flight, serving.max_inflight); "
                    "retry shortly.",
                    retry_after=1.0,
                )
            self._inflight += 1

    def _release(self, count: int) -> None:
        with self._lock:
            self._inflight -= count

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group, stop = self._gather(first)
            self._run(group)
            if stop:
                return

    def _gather(self, first: _Pending[Req, Res]) -> tuple[list[_Pending[Req, Res]], bool]:
        """The first request plus what is queued (or arrives within the wait window) up to ``max_batch``."""
        group = [first]
        deadline = time.perf_counter() + (self.max_wait_s if self._last_size > 1 else 0.0)
        while len(group) < self.max_batch:
            item = self._next(deadline)
            if item is None:
                break
            if item is _STOP:
                return group, True
            group.append(item)
        self._last_size = len(group)
        return group, False

    def _next(self, deadline: float) -> Any:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
        try:
            return self._queue.get(timeout=remaining)
        except queue.Empty:
            return None

    def _run(self, group: list[_Pending[Req, Res]]) -> None:
        started = time.perf_counter()
        outcome: Sequence[Res] | BaseException
        try:
            outcome = self._fn([pending.request for pending in group])
            if len(outcome) != len(group):
                outcome = RuntimeError(f"The batch function returned {len(outcome)} results for {len(group)} requests.")
        except Exception as exc:  # every caller of the group gets the error; the worker lives on
            outcome = exc
        finished = time.perf_counter()
        self._report(
            BatchStats(len(group), started - group[0].enqueued, finished - started, isinstance(outcome, BaseException))
        )
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[int, _Pending[Req, Res]]]] = {}
        for index, pending in enumerate(group):
            by_loop.setdefault(pending.loop, []).append((index, pending))
        for loop, members in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._resolve, members, outcome, started)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                self._release(len(members))

    def _report(self, stats: BatchStats) -> None:
        if self._on_batch is None:
            return
        try:
            self._on_batch(stats)
        except Exception:
            log.exception("The batch statistics hook failed")

    def _resolve(
        self, members: list[tuple[int, _Pending[Req, Res]]], outcome: Sequence[Res] | BaseException, started: float
    ) -> None:
        self._release(len(members))
        for index, pending in members:
            if pending.future.done():  # the caller went away (client disconnect cancels the task)
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result((outcome[index], started - pending.enqueued))
