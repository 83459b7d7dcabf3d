"""Durability: SIGKILL the server mid-load; every acknowledged row survives, nothing is duplicated."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pytest
from tests.fixtures.server import ServerProcess

from recplane import Client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS_PER_BATCH = 50
WRITERS = 4


def _batch(writer: int, number: int) -> list[dict[str, object]]:
    return [{"writer": writer, "batch": number, "seq": i, "ts": "2026-11-23T10:00:00Z"}
            for i in range(ROWS_PER_BATCH)]


def _send(url: str, writer: int, number: int) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/datasets/events/events",
        json=_batch(writer, number),
        headers={"Idempotency-Key": f"w{writer}-b{number}"},
        timeout=10.0,
    )


def _load(url: str, writer: int, acked: set[tuple[int, int]], attempted: set[tuple[int, int]],
          stop: threading.Event) -> None:
    number = 0
    while not stop.is_set():
        attempted.add((writer, number))
        try:
            if _send(url, writer, number).status_code == 200:
                acked.add((writer, number))
        except httpx.TransportError:
            return  # the server is gone: this batch was never acknowledged
        number += 1


def test_sigkill_mid_load_loses_no_acknowledged_row(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    server = server_factory(home, dev=True)
    Client(server.url).create_dataset({
        "name": "events", "event_time": "ts",
        "columns": {"writer": "int64", "batch": "int64", "seq": "int64", "ts": "timestamp"},
    })
    acked: set[tuple[int, int]] = set()
    attempted: set[tuple[int, int]] = set()
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(server.url, w, acked, attempted, stop)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    time.sleep(1.5 + random.random())
    server.kill9()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(acked) > 10, "the load should have been acknowledged many times before the kill"

    restarted = server_factory(home, dev=True)
    table = Client(restarted.url).read("events")
    per_batch = Counter(zip(table["writer"].to_pylist(), table["batch"].to_pylist(), strict=True))
    missing = [key for key in acked if per_batch[key] != ROWS_PER_BATCH]
    assert missing == [], f"acknowledged batches lost or partial after kill -9: {missing[:5]}"
    assert all(count == ROWS_PER_BATCH for count in per_batch.values()), "a batch was committed partially"

    # Retrying everything with the same keys appends nothing that was already committed.
    for writer, number in sorted(attempted):
        assert _send(restarted.url, writer, number).status_code == 200
    after = Client(restarted.url).read("events")
    final = Counter(zip(after["writer"].to_pylist(), after["batch"].to_pylist(), strict=True))
    assert set(final) == attempted
    assert all(count == ROWS_PER_BATCH for count in final.values())
    assert pc.sum(after["seq"]).as_py() == len(attempted) * sum(range(ROWS_PER_BATCH))
