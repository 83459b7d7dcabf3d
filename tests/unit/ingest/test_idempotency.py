"""Idempotency: a batch id is committed once, across retries, restarts and a crash between commit and catalog."""

from __future__ import annotations

import asyncio
import time

import pytest

from recplane.auth import ADMIN, Principal
from recplane.errors import Forbidden, InvalidInput, NotFound, PayloadTooLarge
from recplane.ingest.writer import _RECONCILE_EVERY_S
from recplane.lake import DeltaDataset

from .conftest import Home, event_rows, events_spec, storage_table


def test_retry_with_same_idempotency_key_appends_once(home: Home) -> None:
    service = home.ingestion()
    rows = [*event_rows(3), {"user_id": "bad"}]
    first = service.ingest("events", rows, principal=ADMIN, batch_id="key-1")
    again = service.ingest("events", rows, principal=ADMIN, batch_id="key-1")
    assert (first.accepted, first.rejected, first.duplicate) == (3, 1, False)
    assert (again.accepted, again.rejected, again.version, again.duplicate) == (3, 1, first.version, True)
    assert again.reasons == []
    assert home.rows().num_rows == 3
    assert home.rows("events__rejected").num_rows == 1


def test_retry_after_a_restart_is_still_a_no_op(home: Home) -> None:
    before = home.ingestion()
    first = before.ingest("events", event_rows(5), principal=ADMIN, batch_id="key-2")
    before.close()
    after = home.ingestion()
    again = after.ingest("events", event_rows(5), principal=ADMIN, batch_id="key-2")
    assert again.duplicate and again.version == first.version and again.accepted == 5
    assert home.rows().num_rows == 5


def test_crash_between_delta_commit_and_catalog_write_is_reconciled_from_history(home: Home) -> None:
    # The commit of a process that died before recording its batch ids in the catalog.
    location = home.datasets.get("events", principal=ADMIN).location
    table = storage_table(event_rows(4))
    orphan = DeltaDataset(location).append(
        table, metadata={"batch_ids": ["crashed", "crashed-2"], "batch_rows": {"crashed": [4, 1], "crashed-2": [0, 2]}}
    )
    bulk = DeltaDataset(location).append(table, metadata={"batch_ids": ["crashed-bulk"]})
    service = home.ingestion()
    retry = service.ingest("events", event_rows(4), principal=ADMIN, batch_id="crashed")
    assert (retry.duplicate, retry.version, retry.accepted, retry.rejected) == (True, orphan, 4, 1)
    reject_only = service.ingest("events", event_rows(4), principal=ADMIN, batch_id="crashed-2")
    assert (reject_only.duplicate, reject_only.version, reject_only.rejected) == (True, None, 2)
    streamed = service.ingest("events", event_rows(4), principal=ADMIN, batch_id="crashed-bulk")
    assert (streamed.duplicate, streamed.version, streamed.accepted) == (True, bulk, 4)
    assert home.rows().num_rows == 8


def test_a_key_committed_by_another_process_after_startup_is_found_on_a_miss(home: Home) -> None:
    service = home.ingestion()
    service.ingest("events", event_rows(1), principal=ADMIN)  # writer started and reconciled
    location = home.datasets.get("events", principal=ADMIN).location
    table = storage_table(event_rows(2, start=10))
    version = DeltaDataset(location).append(table, metadata={"batch_ids": ["elsewhere"]})
    time.sleep(_RECONCILE_EVERY_S)  # the writer catches up with other writers' commits at most this often
    retry = service.ingest("events", event_rows(2, start=10), principal=ADMIN, batch_id="elsewhere")
    assert retry.duplicate and retry.version == version
    assert home.rows().num_rows == 3


def test_the_same_key_submitted_twice_at_once_shares_one_commit(home: Home) -> None:
    service = home.ingestion(group_commit_max_wait_ms=200)
    first = service.submit("events", event_rows(3), principal=ADMIN, batch_id="twice")
    second = service.submit("events", event_rows(3), principal=ADMIN, batch_id="twice")
    a, b = first.result(timeout=30), second.result(timeout=30)
    assert a.version == b.version and a.accepted == b.accepted == 3
    assert sorted([a.duplicate, b.duplicate]) == [False, True]
    assert home.rows().num_rows == 3


def test_the_same_key_on_two_datasets_is_two_batches(home: Home) -> None:
    home.datasets.create(events_spec(name="other"), principal=ADMIN)
    service = home.ingestion()
    assert not service.ingest("events", event_rows(1), principal=ADMIN, batch_id="k").duplicate
    assert not service.ingest("other", event_rows(1), principal=ADMIN, batch_id="k").duplicate


def test_async_ingestion_awaits_the_commit(home: Home) -> None:
    service = home.ingestion()
    body = b"\n".join(b'{"user_id": %d}' % i for i in range(5))
    result = asyncio.run(service.ingest_async("events", body, principal=ADMIN, batch_id="async"))
    assert result.accepted == 5 and result.version is not None
    assert home.rows(version=result.version).num_rows == 5


def test_ingest_checks_owner_size_target_and_key(home: Home) -> None:
    service = home.ingestion(max_request_bytes=1024)
    with pytest.raises(Forbidden):
        service.ingest("events", event_rows(1), principal=Principal(team="other"))
    with pytest.raises(NotFound):
        service.ingest("nope", event_rows(1), principal=ADMIN)
    with pytest.raises(PayloadTooLarge):
        service.ingest("events", b"[" + b" " * 2000 + b"]", principal=ADMIN)
    with pytest.raises(InvalidInput, match="dead-letter dataset"):
        service.ingest("events__rejected", event_rows(1), principal=ADMIN)
    with pytest.raises(InvalidInput, match="batch id"):
        service.ingest("events", event_rows(1), principal=ADMIN, batch_id="x" * 300)
    assert service.ingest("events", event_rows(1), principal=Principal(team="recsys")).accepted == 1


def test_empty_input_commits_nothing(home: Home) -> None:
    result = home.ingestion().ingest("events", [], principal=ADMIN)
    assert (result.accepted, result.rejected, result.version) == (0, 0, None)
    assert home.commits() == []
