"""Group commit: many small batches share commits, acknowledged only once durable, bounded queues."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from recplane.auth import ADMIN
from recplane.errors import BackendUnavailable, InvalidInput, Overloaded
from recplane.ingest import IngestResult, IngestService
from recplane.lake import DatasetService

from .conftest import Home, event_rows


def test_concurrent_small_submits_merge_into_fewer_commits(home: Home) -> None:
    service = home.ingestion(group_commit_max_wait_ms=20)

    def send(start: int) -> IngestResult:
        return service.ingest("events", event_rows(5, start=start), principal=ADMIN)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, range(0, 5 * 200, 5)))
    assert sum(r.accepted for r in results) == 1000
    commits = home.commits()
    assert len(commits) < len(results) / 4
    assert sorted(home.rows().column("user_id").to_pylist()) == list(range(1000))
    assert max(c.batch_count or 0 for c in commits) > 1


def test_a_batch_is_acknowledged_only_with_a_version_that_holds_its_rows(home: Home) -> None:
    service = home.ingestion(group_commit_max_wait_ms=5)

    def send(start: int) -> tuple[int, IngestResult]:
        return start, service.ingest("events", event_rows(3, start=start), principal=ADMIN)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(0, 300, 3)))
    for start, result in results:
        assert result.version is not None
        at_version = set(home.rows(version=result.version).column("user_id").to_pylist())
        assert {start, start + 1, start + 2} <= at_version


def test_a_failed_commit_fails_every_batch_of_its_group_and_acknowledges_none(home: Home) -> None:
    service = home.ingestion(group_commit_max_wait_ms=300)
    service.ingest("events", event_rows(1), principal=ADMIN)  # writer started, table handle loaded
    location = Path(home.datasets.get("events", principal=ADMIN).location)
    futures = [service.submit("events", event_rows(2, start=10 * i), principal=ADMIN) for i in range(3)]
    shutil.rmtree(location / "_delta_log")
    (location / "_delta_log").write_text("not a log")  # the table is now unreadable: the commit fails
    for future in futures:
        with pytest.raises(BackendUnavailable, match="Nothing of them was acknowledged; retry"):
            future.result(timeout=30)


def test_a_full_queue_answers_overloaded_with_a_retry_delay(home: Home) -> None:
    service = home.ingestion(group_commit_max_wait_ms=300, ingest_queue_max_rows=10)
    first = service.submit("events", event_rows(8), principal=ADMIN)
    with pytest.raises(Overloaded) as raised:
        service.submit("events", event_rows(8, start=100), principal=ADMIN)
    assert raised.value.retry_after > 0
    assert raised.value.status == 429
    assert first.result(timeout=30).accepted == 8
    assert service.ingest("events", event_rows(8, start=200), principal=ADMIN).accepted == 8


def test_an_empty_queue_takes_a_batch_larger_than_its_bound(home: Home) -> None:
    service = home.ingestion(ingest_queue_max_rows=10)
    assert service.ingest("events", event_rows(50), principal=ADMIN).accepted == 50


def test_close_commits_everything_queued_before_returning(home: Home) -> None:
    service = home.ingestion(group_commit_max_wait_ms=200)
    futures = [service.submit("events", event_rows(4, start=4 * i), principal=ADMIN) for i in range(10)]
    service.close()
    assert all(f.done() for f in futures)
    assert home.rows().num_rows == 40
    with pytest.raises(Exception, match="closed"):
        service.ingest("events", event_rows(1), principal=ADMIN)


def test_large_inputs_stream_into_one_commit_of_their_own(home: Home) -> None:
    service = home.ingestion(group_commit_max_rows=1_000)
    rows = event_rows(5_000)
    rows[10]["user_id"] = None
    before = len(home.commits())
    result = service.ingest("events", rows, principal=ADMIN)
    assert (result.accepted, result.rejected) == (4_999, 1)
    assert len(home.commits()) == before + 1
    assert home.rows("events__rejected").column("reason").to_pylist() == ["column 'user_id' is null but not nullable"]
    assert result.reasons[0].row == 10


def test_ingestion_asks_for_compaction_every_few_commits(home: Home) -> None:
    settings = home.settings.model_copy(update={"compact_check_every_commits": 3, "compact_after_files": 4})
    service = IngestService(home.catalog, DatasetService(home.catalog, settings), settings)
    home.services.append(service)
    for start in range(0, 30, 3):
        service.ingest("events", event_rows(3, start=start), principal=ADMIN)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        operations = [v.operation for v in home.datasets.history("events", principal=ADMIN)]
        if "compact" in operations:
            break
        time.sleep(0.05)
    assert "compact" in operations
    assert home.rows().num_rows == 30


def test_many_threads_against_many_datasets_lose_nothing(home: Home) -> None:
    from .conftest import events_spec

    home.datasets.create(events_spec(name="other"), principal=ADMIN)
    service = home.ingestion(group_commit_max_wait_ms=3)
    errors: list[BaseException] = []

    def send(name: str, start: int) -> None:
        try:
            service.ingest(name, event_rows(2, start=start), principal=ADMIN)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n, s)) for s in range(0, 100, 2) for n in ("events", "other")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert home.rows("events").num_rows == home.rows("other").num_rows == 100


def test_a_streamed_input_that_breaks_midway_writes_nothing(home: Home) -> None:
    schema = pa.schema([pa.field("user_id", pa.int64())])

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, 3000, 500):
            if start == 2000:
                raise OSError("disk went away")
            yield pa.record_batch([pa.array(range(start, start + 500), pa.int64())], schema=schema)

    service = home.ingestion(group_commit_max_rows=1000)
    with pytest.raises(InvalidInput, match="disk went away"):
        service.ingest("events", pa.RecordBatchReader.from_batches(schema, batches()), principal=ADMIN)
    assert home.commits() == []
    assert service.ingest("events", event_rows(2), principal=ADMIN).accepted == 2


class SlowCompaction:
    """A commit target whose compaction of the main table lasts until ``release`` is set."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def maybe_compact(self, name: str) -> object:
        if name.endswith("__rejected"):
            return None
        self.started.set()
        self.release.wait(30)
        return None


def test_a_running_compaction_is_not_starved_by_the_writers_own_commits(home: Home) -> None:
    from recplane.ingest import BatchLedger, TableWriter
    from recplane.ingest.validation import DEAD_LETTER_SCHEMA
    from recplane.ingest.writer import _COMMITS_DURING_COMPACTION
    from recplane.lake.table import DeltaDataset

    from .conftest import storage_table

    settings = home.settings.model_copy(update={"compact_check_every_commits": 1, "compact_after_files": 1})
    target = SlowCompaction()
    main = home.datasets.open("events", principal=ADMIN).table.uri
    dead = home.datasets.open("events__rejected", principal=ADMIN).table.uri
    writer = TableWriter("events", DeltaDataset(main), DeltaDataset(dead), target=target,
                         ledger=BatchLedger(home.catalog), settings=settings, rejected_name="events__rejected")
    try:
        def commit(index: int) -> Any:
            return writer.submit(f"b{index}", storage_table(event_rows(1, start=index)),
                                 DEAD_LETTER_SCHEMA.empty_table(), schema_version=1, author="test")

        commit(0).result(timeout=30)
        assert target.started.wait(30)  # the first commit started a compaction, which now runs
        for index in range(1, _COMMITS_DURING_COMPACTION + 1):
            commit(index).result(timeout=30)
        held = commit(_COMMITS_DURING_COMPACTION + 1)
        time.sleep(0.3)
        assert not held.done(), "the writer must wait for the compaction rather than outrun its commit"
        target.release.set()
        assert held.result(timeout=30).accepted == 1
    finally:
        target.release.set()
        writer.close()
    assert home.rows().num_rows == _COMMITS_DURING_COMPACTION + 2
