"""References on the wire, cache keys, and cron schedules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recplane.errors import InvalidInput, InvalidSpec
from recplane.pipelines import DatasetRef, ModelVersionRef, RunRef
from recplane.pipelines.cache import cache_key, code_identity
from recplane.pipelines.cron import parse_cron
from recplane.pipelines.refs import decode_value, encode_value


def test_references_survive_json_and_strings_become_dataset_refs() -> None:
    value = {"d": DatasetRef("ratings", 3), "m": ModelVersionRef("recsys", 2), "r": [RunRef("abc")]}
    encoded = encode_value(value)
    assert encoded["d"] == {"$ref": "dataset", "name": "ratings", "version": 3}
    assert decode_value(encoded) == value
    assert decode_value("ratings@7", DatasetRef) == DatasetRef("ratings", 7)
    assert decode_value("ratings", DatasetRef | None) == DatasetRef("ratings")
    with pytest.raises(InvalidInput, match="cannot be stored"):
        encode_value(object())


def _one(x: int) -> int:
    return x + 1


def _two(x: int) -> int:
    return x + 2


def test_the_cache_key_changes_with_code_inputs_and_params_and_only_then() -> None:
    base = {"pipeline": "p", "step": "s", "code": code_identity(_one), "inputs": {"x": 1}, "params": None}
    key = cache_key(**base)
    assert key == cache_key(**base)
    assert key != cache_key(**{**base, "code": code_identity(_two)})
    assert key != cache_key(**{**base, "inputs": {"x": 2}})
    pinned = {"data": {"$ref": "dataset", "name": "ratings", "version": 3}}
    assert cache_key(**{**base, "inputs": pinned}) != cache_key(
        **{**base, "inputs": {"data": {"$ref": "dataset", "name": "ratings", "version": 4}}})
    assert key != cache_key(**{**base, "params": {"day": "2026-11-01"}})
    assert code_identity(_one) == code_identity(_one)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_cron_finds_the_next_firing_time() -> None:
    assert parse_cron("0 3 * * *").next_after(_at("2026-11-30 03:00")) == _at("2026-12-01 03:00")
    assert parse_cron("*/15 * * * *").next_after(_at("2026-11-30 10:07")) == _at("2026-11-30 10:15")
    assert parse_cron("0 9 * * mon-fri").next_after(_at("2026-11-28 12:00")) == _at("2026-11-30 09:00")  # Sat→Mon
    assert parse_cron("@monthly").next_after(_at("2026-12-15 00:00")) == _at("2027-01-01 00:00")
    assert parse_cron("0 0 29 2 *").next_after(_at("2026-03-01 00:00")) == _at("2028-02-29 00:00")
    # both day fields restricted: either matches (Vixie cron)
    assert parse_cron("0 0 13 * fri").next_after(_at("2026-11-01 00:00")) == _at("2026-11-06 00:00")


def test_missed_slots_collapse_into_the_latest() -> None:
    schedule = parse_cron("0 * * * *")
    assert schedule.latest_due(_at("2026-11-30 01:30"), _at("2026-11-30 05:10")) == _at("2026-11-30 05:00")
    assert schedule.latest_due(_at("2026-11-30 05:00"), _at("2026-11-30 05:59")) is None


@pytest.mark.parametrize("bad", ["* * * *", "60 * * * *", "* * * 13 *", "*/0 * * * *", "a * * * *",
                                 "0 0 31 2 *"])
def test_invalid_cron_expressions_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(InvalidSpec, match="Cron expression"):
        parse_cron(bad)


@given(st.integers(0, 59), st.integers(0, 23), st.datetimes(min_value=datetime(2000, 1, 1),
                                                            max_value=datetime(2090, 1, 1)))
def test_a_daily_schedule_fires_within_a_day_at_its_time(minute: int, hour: int, moment: datetime) -> None:
    fired = parse_cron(f"{minute} {hour} * * *").next_after(moment)
    start = moment.replace(tzinfo=UTC)
    assert fired > start and (fired - start).total_seconds() <= 86400
    assert (fired.hour, fired.minute, fired.second) == (hour, minute, 0)
