"""Ingestion reuses a dataset's spec, validator and writer for a moment, without giving up on checks."""

from __future__ import annotations

import asyncio
import time

import pytest

from recplane.auth import ADMIN, Principal
from recplane.catalog import Catalog
from recplane.errors import Forbidden
from recplane.ingest.service import SPEC_CACHE_SECONDS
from recplane.lake import DatasetService, load_spec

from .conftest import EVENTS_SPEC, Home, event_rows

WIDER = {**EVENTS_SPEC, "columns": {**EVENTS_SPEC["columns"], "country": "string"}}


def test_a_cached_dataset_still_refuses_another_team(home: Home) -> None:
    service = home.ingestion()
    service.ingest("events", event_rows(1), principal=ADMIN)
    with pytest.raises(Forbidden, match="Dataset 'events' belongs to team 'recsys'; your token is for team 'ads'"):
        service.ingest("events", event_rows(1, start=1), principal=Principal(team="ads"))
    assert service.ingest("events", event_rows(1, start=2), principal=Principal(team="recsys")).accepted == 1


def test_a_spec_changed_by_another_process_applies_within_the_cache_period(home: Home) -> None:
    service = home.ingestion()
    service.ingest("events", event_rows(1), principal=ADMIN)
    other_process = DatasetService(Catalog(home.settings.catalog_url), home.settings)
    other_process.apply(load_spec(WIDER), principal=ADMIN)
    time.sleep(SPEC_CACHE_SECONDS)
    result = service.ingest("events", [{"user_id": 5, "country": "NL"}], principal=ADMIN)
    assert (result.accepted, result.rejected) == (1, 0)
    assert ("NL", 5) in [(r["country"], r["user_id"]) for r in home.rows().to_pylist()]


def test_small_bodies_ingest_on_the_event_loop_once_the_dataset_is_known(home: Home) -> None:
    service = home.ingestion()
    body = b'[{"user_id": 1}, {"user_id": 2}, {"user_id": null}]'

    async def ingest_twice() -> list[int]:
        first = await service.ingest_async("events", body, principal=ADMIN, batch_id="a")  # on a worker thread
        assert service._submits_inline("events", body)
        second = await service.ingest_async("events", body, principal=ADMIN, batch_id="b")
        return [first.accepted, first.rejected, second.accepted, second.rejected]

    assert asyncio.run(ingest_twice()) == [2, 1, 2, 1]
    assert not service._submits_inline("events", b" " * (1024 * 1024))
    assert home.rows().num_rows == 4
