"""NATS JetStream into a dataset: invalid messages dead-lettered, acks after commit, exactly once across
crashes (a consumer killed with SIGKILL mid-stream, or one that committed but never acknowledged)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from recplane.auth import ADMIN
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.ingest import IngestService, consume_stream, stream_app_id
from recplane.ingest.sources import RowChunk
from recplane.lake import DatasetService, load_spec

pytestmark = [pytest.mark.integration, pytest.mark.nats]

SPEC = {"name": "clicks", "columns": {"user_id": {"type": "int64", "nullable": False}, "item": "string"}}


@dataclass
class Setup:
    settings: Settings
    datasets: DatasetService
    service: IngestService
    subject: str
    stream: str
    nats_url: str

    def user_ids(self) -> list[int]:
        return sorted(self.datasets.read("clicks", principal=ADMIN).column("user_id").to_pylist())

    def dead_letters(self) -> int:
        return self.datasets.read("clicks__rejected", principal=ADMIN).num_rows


@pytest.fixture
def setup(nats_url: str, settings: Settings) -> Iterator[Setup]:
    catalog = Catalog(settings.catalog_url)
    datasets = DatasetService(catalog, settings)
    datasets.create(load_spec(SPEC), principal=ADMIN)
    service = IngestService(catalog, datasets, settings)
    token = uuid.uuid4().hex[:10]
    state = Setup(settings, datasets, service, f"test.clicks.{token}", f"TEST_CLICKS_{token}", nats_url)
    yield state
    service.close()
    catalog.close()
    asyncio.run(_delete_stream(nats_url, state.stream))


async def _delete_stream(url: str, stream: str) -> None:
    import nats

    connection = await nats.connect(url)
    with contextlib.suppress(Exception):
        await connection.jetstream().delete_stream(stream)
    await connection.close()


async def _publish(url: str, subject: str, stream: str, payloads: list[bytes]) -> None:
    import nats
    from nats.js.errors import NotFoundError

    connection = await nats.connect(url)
    js = connection.jetstream()
    try:
        await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(name=stream, subjects=[subject])
    for payload in payloads:
        await js.publish(subject, payload)
    await connection.close()


def publish(setup: Setup, payloads: list[bytes]) -> None:
    asyncio.run(_publish(setup.nats_url, setup.subject, setup.stream, payloads))


def valid(start: int, count: int) -> list[bytes]:
    return [orjson.dumps({"user_id": i, "item": f"i{i}"}) for i in range(start, start + count)]


def consume(setup: Setup, **kwargs: Any) -> Any:
    return consume_stream(
        setup.service,
        "clicks",
        nats_url=setup.nats_url,
        subject=setup.subject,
        stream=setup.stream,
        principal=ADMIN,
        max_wait=0.3,
        **kwargs,
    )


def test_messages_land_once_and_invalid_ones_are_dead_lettered(setup: Setup) -> None:
    payloads = valid(0, 300)
    payloads += [orjson.dumps([{"user_id": 1000 + 2 * i}, {"user_id": 1001 + 2 * i}]) for i in range(20)]
    payloads += [b"{not json"] * 10 + [orjson.dumps({"user_id": "x"})] * 5 + [orjson.dumps([1, 2])]
    publish(setup, payloads)
    stats = consume(setup, batch_size=64, max_messages=len(payloads))
    assert stats.messages == len(payloads)
    assert setup.user_ids() == list(range(300)) + list(range(1000, 1040))
    assert setup.dead_letters() == 10 + 5 + 2
    assert (stats.accepted, stats.rejected) == (340, 17)
    dead = setup.datasets.read("clicks__rejected", principal=ADMIN).to_pylist()
    assert any(d["reason"].startswith("message ") and "invalid JSON" in d["reason"] for d in dead)
    assert {d["source"] for d in dead} == {f"nats:{setup.subject}"}
    # Everything was acknowledged: a second run finds nothing new.
    again = consume(setup, max_messages=1, stop=_stop_after(1.5))
    assert again.accepted == 0 and setup.user_ids()[-1] == 1039


def _stop_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return stop


def test_a_batch_committed_but_never_acknowledged_is_not_ingested_twice(setup: Setup) -> None:
    publish(setup, valid(0, 300))

    async def commit_without_ack() -> None:
        import nats

        connection = await nats.connect(setup.nats_url)
        js = connection.jetstream()
        subscription = await js.pull_subscribe(setup.subject, durable="recplane-clicks", stream=setup.stream)
        messages = await subscription.fetch(100, timeout=5)
        last = max(m.metadata.sequence.stream for m in messages)
        rows = [orjson.loads(m.data) for m in messages]
        from deltalake import Transaction

        app_id = stream_app_id(setup.stream, "recplane-clicks")
        future = setup.service.submit(
            "clicks",
            RowChunk(rows),
            principal=ADMIN,
            batch_id=f"{app_id}:1-{last}",
            transaction=Transaction(app_id, last),
        )
        future.result(timeout=30)
        await connection.close()  # crash: no ack

    asyncio.run(commit_without_ack())
    assert len(setup.user_ids()) == 100
    stats = consume(setup, batch_size=50, max_messages=200)
    assert setup.user_ids() == list(range(300))
    assert stats.accepted == 200


CONSUMER = textwrap.dedent(
    """
    import sys
    from recplane.auth import ADMIN
    from recplane.catalog import Catalog
    from recplane.config import Settings
    from recplane.ingest import IngestService, consume_stream
    from recplane.lake import DatasetService

    settings = Settings(home=sys.argv[1], group_commit_max_wait_ms=2.0)
    catalog = Catalog(settings.catalog_url)
    service = IngestService(catalog, DatasetService(catalog, settings), settings)
    consume_stream(service, "clicks", nats_url=sys.argv[2], subject=sys.argv[3], stream=sys.argv[4],
                   principal=ADMIN, batch_size=40, max_wait=0.2)
    """
)


def test_a_consumer_killed_mid_stream_resumes_without_duplicates_or_loss(setup: Setup, tmp_path: Path) -> None:
    total = 3000
    publish(setup, valid(0, total))
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(setup.settings.home), setup.nats_url, setup.subject, setup.stream],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(setup.user_ids()) < total // 3:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    committed = len(setup.user_ids())
    assert 0 < committed < total, "the consumer should be killed mid-stream"

    stop = threading.Event()
    worker = threading.Thread(target=lambda: consume(setup, batch_size=100, stop=stop))
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(setup.user_ids()) < total:
        time.sleep(0.1)
    time.sleep(1.0)  # anything extra (a duplicate) would show up now
    stop.set()
    worker.join()
    assert setup.user_ids() == list(range(total))
