"""Synthetic interactions: deterministic, chunked, and shaped like real traffic."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recplane.errors import InvalidSpec
from recplane.samples import (
    SyntheticSpec,
    generate_synthetic,
    iter_synthetic_batches,
    synthetic_items,
    synthetic_users,
)
from recplane.samples.synthetic import EVENTS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA

SPEC = SyntheticSpec(users=500, items=2_000, events=60_000, seed=11, days=14, chunk_rows=25_000)


@pytest.fixture(scope="module")
def events() -> pa.Table:
    return pa.Table.from_batches(list(iter_synthetic_batches(SPEC)))


def _digests(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]


def test_same_spec_writes_byte_identical_files(tmp_path: Path) -> None:
    first = generate_synthetic(SPEC, tmp_path / "a")
    second = generate_synthetic(SPEC, tmp_path / "b")

    assert _digests([*first.events, first.items, first.users]) == _digests(
        [*second.events, second.items, second.users]
    )


def test_another_seed_gives_other_events() -> None:
    spec = SyntheticSpec(users=50, items=100, events=1_000, seed=1)
    other = SyntheticSpec(users=50, items=100, events=1_000, seed=2)

    assert not next(iter_synthetic_batches(spec)).equals(next(iter_synthetic_batches(other)))


def test_files_are_chunked_and_hold_the_streamed_events(tmp_path: Path, events: pa.Table) -> None:
    seen: list[int] = []

    files = generate_synthetic(SPEC, tmp_path, progress=seen.append)

    assert [path.name for path in files.events] == [
        "events-00000.parquet",
        "events-00001.parquet",
        "events-00002.parquet",
    ]
    assert [pq.read_metadata(path).num_rows for path in files.events] == [25_000, 25_000, 10_000]
    assert seen == [25_000, 50_000, 60_000]
    assert files.event_count == 60_000
    assert pq.read_table(tmp_path, schema=EVENTS_SCHEMA, ignore_prefixes=["items", "users"]).equals(events)


def test_rerun_into_the_same_folder_removes_stale_event_files(tmp_path: Path) -> None:
    generate_synthetic(SyntheticSpec(users=10, items=20, events=300, chunk_rows=100), tmp_path)

    generate_synthetic(SyntheticSpec(users=10, items=20, events=100, chunk_rows=100), tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events-00000.parquet",
        "items.parquet",
        "users.parquet",
    ]


def test_tables_have_the_documented_schemas(tmp_path: Path, events: pa.Table) -> None:
    files = generate_synthetic(SyntheticSpec(users=10, items=20, events=50), tmp_path)

    assert events.schema == EVENTS_SCHEMA
    assert pq.read_table(files.events[0]).schema == EVENTS_SCHEMA
    assert pq.read_table(files.items).schema == ITEMS_SCHEMA
    assert pq.read_table(files.users).schema == USERS_SCHEMA
    assert events.column("event_type").type == pa.string()


def test_ids_cover_the_spec_ranges_from_one(events: pa.Table) -> None:
    assert pc.min(events.column("user_id")).as_py() >= 1
    assert pc.max(events.column("user_id")).as_py() <= SPEC.users
    assert pc.min(events.column("item_id")).as_py() >= 1
    assert pc.max(events.column("item_id")).as_py() <= SPEC.items


def test_top_one_percent_of_items_take_a_large_share(events: pa.Table) -> None:
    counts = np.bincount(events.column("item_id").to_numpy(), minlength=SPEC.items + 1)[1:]
    top = np.sort(counts)[::-1][: SPEC.items // 100]

    assert top.sum() / counts.sum() > 0.25


def test_popularity_rank_matches_observed_traffic(events: pa.Table) -> None:
    counts = np.bincount(events.column("item_id").to_numpy(), minlength=SPEC.items + 1)[1:]
    rank = synthetic_items(SPEC).column("popularity_rank").to_numpy()

    assert sorted(rank) == list(range(1, SPEC.items + 1))
    assert counts[rank <= 20].sum() > 10 * counts[rank > SPEC.items - 20].sum()


def test_sessions_belong_to_one_user_and_are_short_bursts(events: pa.Table) -> None:
    frame = events.to_pandas()
    sessions = frame.groupby("session_id")

    assert (sessions["user_id"].nunique() == 1).all()
    assert 3.0 < sessions.size().mean() < 8.0
    gaps = sessions["ts"].diff().dropna()
    assert (gaps >= timedelta(0)).all()
    assert gaps.max() <= timedelta(minutes=30)
    assert timedelta(seconds=10) < gaps.median() < timedelta(minutes=5)


def test_session_ids_do_not_repeat_across_chunks() -> None:
    first, second, *_ = iter_synthetic_batches(SPEC)

    shared = set(first.column("session_id").to_pylist()) & set(second.column("session_id").to_pylist())
    assert not shared


def test_events_fill_the_window_in_time_order(events: pa.Table) -> None:
    ts = events.column("ts").to_numpy()
    start = np.datetime64(SPEC.start.replace(tzinfo=None), "us")

    assert ts.min() >= start
    assert ts.max() < start + np.timedelta64(SPEC.days, "D")
    assert ts.max() - ts.min() > np.timedelta64(SPEC.days - 1, "D")
    assert (np.diff(ts) < np.timedelta64(-1, "h")).sum() == 0


def test_evenings_are_busier_than_nights(events: pa.Table) -> None:
    hours = pc.hour(events.column("ts")).to_numpy()

    assert (hours == 20).sum() > 3 * (hours == 3).sum()


def test_views_dominate_then_clicks_then_purchases(events: pa.Table) -> None:
    types = events.column("event_type").to_numpy(zero_copy_only=False)
    share = {name: float((types == name).mean()) for name in ("view", "click", "purchase")}

    assert share["view"] > 0.7
    assert 0.08 < share["click"] < 0.3
    assert 0.01 < share["purchase"] < 0.08


def test_values_are_ratings_in_half_steps(events: pa.Table) -> None:
    values = events.column("value").to_numpy()

    assert values.min() >= 1.0
    assert values.max() <= 5.0
    assert set(np.unique(values * 2) % 1) == {0.0}


def test_clusters_prefer_some_categories(events: pa.Table) -> None:
    users = synthetic_users(SPEC).select(["user_id", "cluster"])
    items = synthetic_items(SPEC).select(["item_id", "category"])
    joined = events.join(users, "user_id").join(items, "item_id").to_pandas()
    by_cluster = joined.groupby("cluster")["category"].value_counts(normalize=True)
    overall = joined["category"].value_counts(normalize=True)

    lift = by_cluster / overall.reindex(by_cluster.index.get_level_values("category")).to_numpy()
    assert (lift.groupby(level="cluster").max() > 2.0).all()


def test_users_signed_up_before_the_window() -> None:
    users = synthetic_users(SPEC)

    assert pc.max(users.column("signup_ts")).as_py() < SPEC.start
    assert set(users.column("cluster").to_pylist()) <= set(range(SPEC.clusters))


def test_titles_are_three_generated_words() -> None:
    titles = synthetic_items(SyntheticSpec(users=1, items=50, events=0)).column("title").to_pylist()

    assert all(len(title.split()) == 3 and title.istitle() for title in titles)


def test_zero_events_writes_only_the_catalogue(tmp_path: Path) -> None:
    files = generate_synthetic(SyntheticSpec(users=5, items=30, events=0), tmp_path)

    assert files.events == []
    assert pq.read_metadata(files.items).num_rows == 30


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"items": 5, "categories": 20}, "items .5. must be at least categories"),
        ({"start": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"chunk_rows": 0}, "chunk_rows must be at least 1"),
        ({"events": -1}, "events cannot be negative"),
    ],
)
def test_invalid_specs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        SyntheticSpec(**changes)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    events=st.integers(0, 3_000),
    chunk_rows=st.integers(60, 1_500),
    days=st.integers(1, 5),
    start=st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)),
)
def test_any_spec_yields_exactly_its_events_within_the_window(
    events: int, chunk_rows: int, days: int, start: datetime
) -> None:
    spec = SyntheticSpec(users=30, items=40, events=events, chunk_rows=chunk_rows, days=days, start=start)

    batches = list(iter_synthetic_batches(spec))

    assert sum(batch.num_rows for batch in batches) == events
    assert all(0 < batch.num_rows <= chunk_rows for batch in batches)
    for batch in batches:
        assert pc.min(batch.column("ts")).as_py() >= start
        assert pc.max(batch.column("ts")).as_py() < start + timedelta(days=days)
