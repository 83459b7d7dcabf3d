"""MicroBatcher: grouping, no added latency when alone, per-group errors, load shedding, clean shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from recplane.errors import InvalidInput, Overloaded
from recplane.serving.batching import BatchStats, LoadShed, MicroBatcher


class SlowDoubler:
    """Doubles numbers, slowly, recording the group sizes it was called with."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, requests: Sequence[int]) -> list[int]:
        self.gate.wait(5)
        self.sizes.append(len(requests))
        time.sleep(self.delay)
        return [2 * value for value in requests]


def test_each_caller_gets_its_own_result_and_concurrent_requests_share_calls() -> None:
    fn = SlowDoubler(delay=0.01)
    batcher = MicroBatcher(fn, max_batch=8, max_wait_ms=1.0)

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(value) for value in range(40))))

    try:
        assert asyncio.run(burst()) == [2 * value for value in range(40)]
    finally:
        batcher.close()
    assert sum(fn.sizes) == 40
    assert max(fn.sizes) == 8  # groups are capped at max_batch
    assert len(fn.sizes) <= 10  # and formed: 40 requests took far fewer than 40 calls


def test_a_lone_request_is_not_held_for_the_wait_window() -> None:
    batcher = MicroBatcher(SlowDoubler(), max_batch=32, max_wait_ms=200.0)

    async def sequential() -> float:
        worst = 0.0
        for value in range(5):
            started = time.perf_counter()
            assert await batcher.submit(value) == 2 * value
            worst = max(worst, time.perf_counter() - started)
        return worst

    try:
        assert asyncio.run(sequential()) < 0.1  # far below the 200 ms window
    finally:
        batcher.close()


def test_an_exception_reaches_every_request_of_its_group_and_the_worker_survives() -> None:
    def fail_on_seven(requests: Sequence[int]) -> list[int]:
        if 7 in requests:
            raise ValueError("seven is not allowed")
        return list(requests)

    batcher = MicroBatcher(fail_on_seven, max_batch=4)

    async def scenario() -> tuple[BaseException | int, int]:
        failed = await asyncio.gather(batcher.submit(7), return_exceptions=True)
        return failed[0], await batcher.submit(3)

    try:
        error, after = asyncio.run(scenario())
    finally:
        batcher.close()
    assert isinstance(error, ValueError) and "seven" in str(error)
    assert after == 3


def test_a_wrong_number_of_results_fails_the_group_loudly() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda requests: [], max_batch=4)
    try:
        with pytest.raises(RuntimeError, match="returned 0 results for 1 requests"):
            asyncio.run(batcher.submit(1))
    finally:
        batcher.close()


def test_requests_beyond_max_inflight_are_shed_at_once_and_service_recovers() -> None:
    fn = SlowDoubler()
    fn.gate.clear()  # hold the worker so requests pile up
    batcher = MicroBatcher(fn, max_batch=2, max_inflight=3)

    async def scenario() -> tuple[list[int | BaseException], float, int]:
        held = [asyncio.ensure_future(batcher.submit(value)) for value in range(3)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        with pytest.raises(LoadShed) as refused:
            await batcher.submit(99)
        shed_s = time.perf_counter() - started
        assert refused.value.status == 503 and isinstance(refused.value, Overloaded)
        assert refused.value.retry_after > 0
        fn.gate.set()
        done = list(await asyncio.gather(*held, return_exceptions=True))
        return done, shed_s, await batcher.submit(5)

    try:
        done, shed_s, after = asyncio.run(scenario())
    finally:
        batcher.close()
    assert done == [0, 2, 4]
    assert shed_s < 0.05  # refused immediately, not after a timeout
    assert after == 10
    assert batcher.inflight == 0


def test_statistics_hook_sees_every_group() -> None:
    seen: list[BatchStats] = []
    batcher = MicroBatcher(SlowDoubler(delay=0.005), max_batch=16, on_batch=seen.append)

    async def burst() -> None:
        await asyncio.gather(*(batcher.submit(value) for value in range(20)))

    try:
        asyncio.run(burst())
    finally:
        batcher.close()
    assert sum(stats.size for stats in seen) == 20
    assert all(stats.run_s >= 0.005 and stats.queue_wait_s >= 0 and not stats.failed for stats in seen)


def test_several_worker_threads_share_the_queue() -> None:
    names: set[str] = set()

    def record_thread(requests: Sequence[int]) -> list[int]:
        names.add(threading.current_thread().name)
        time.sleep(0.02)
        return list(requests)

    batcher = MicroBatcher(record_thread, max_batch=1, threads=2, name="pair")

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(value) for value in range(6))))

    try:
        assert asyncio.run(burst()) == list(range(6))
    finally:
        batcher.close()
    assert names == {"pair-0", "pair-1"}


def test_close_finishes_queued_work_then_refuses_new_requests() -> None:
    fn = SlowDoubler(delay=0.01)
    batcher = MicroBatcher(fn, max_batch=2)

    async def scenario() -> list[int]:
        pending = [asyncio.ensure_future(batcher.submit(value)) for value in range(4)]
        await asyncio.sleep(0)
        await asyncio.to_thread(batcher.close)
        with pytest.raises(LoadShed, match="shutting down"):
            await batcher.submit(1)
        return list(await asyncio.gather(*pending))

    assert asyncio.run(scenario()) == [0, 2, 4, 6]


def test_settings_must_be_positive() -> None:
    with pytest.raises(InvalidInput, match="max_batch=0"):
        MicroBatcher(SlowDoubler(), max_batch=0)


def test_submit_timed_reports_how_long_each_request_waited_for_its_group() -> None:
    fn = SlowDoubler(delay=0.05)
    batcher = MicroBatcher(fn, max_batch=1, max_wait_ms=0.0)

    async def two_at_once() -> list[tuple[int, float]]:
        return list(await asyncio.gather(batcher.submit_timed(1), batcher.submit_timed(2)))

    try:
        (first, first_wait), (second, second_wait) = asyncio.run(two_at_once())
        alone = asyncio.run(batcher.submit_timed(3))
    finally:
        batcher.close()
    assert (first, second, alone[0]) == (2, 4, 6)
    # Groups of one: the second request waited in the queue while the first one's 50 ms call ran.
    assert first_wait < 0.04 <= second_wait and alone[1] < 0.04
