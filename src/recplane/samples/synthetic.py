"""Synthetic interaction data that looks like a real shop's event log, at any size, from a seed.

Demos, benchmarks and load tests need interactions with the shape of real ones: a few items take most
of the traffic (Zipf-like popularity), users fall into taste clusters that prefer some categories,
events arrive in sessions (a burst from one user, seconds to minutes apart), traffic follows the time of
day, and views far outnumber clicks and purchases. Everything is drawn with NumPy, a chunk of events at a
time, so 100M events never sit in memory at once and no Python code runs per event. Chunk ``k`` draws from
its own random stream (``seed``, ``k``), which makes the output a pure function of the spec.

Chunks cover consecutive slices of the time window and each chunk is sorted by ``ts``, so the stream is in
time order apart from sessions that run a few minutes past their chunk's slice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recplane.errors import InvalidSpec

__all__ = [
    "EVENTS_SCHEMA",
    "ITEMS_SCHEMA",
    "USERS_SCHEMA",
    "SyntheticFiles",
    "SyntheticSpec",
    "generate_synthetic",
    "iter_synthetic_batches",
    "synthetic_items",
    "synthetic_users",
]

UTC_MICROS = pa.timestamp("us", tz="UTC")
EVENTS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("value", pa.float32(), nullable=False),
        pa.field("ts", UTC_MICROS, nullable=False),
        pa.field("session_id", pa.int64(), nullable=False),
    ]
)
ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("popularity_rank", pa.int32(), nullable=False),
    ]
)
USERS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("cluster", pa.int32(), nullable=False),
        pa.field("signup_ts", UTC_MICROS, nullable=False),
    ]
)

EVENT_TYPES = pa.array(["view", "click", "purchase"], pa.string())
EVENT_FILE = re.compile(r"events-\d{5}\.parquet")

ITEM_POPULARITY_EXPONENT = 1.0  # Zipf's s; real catalogues measure between 0.8 and 1.2
USER_ACTIVITY_EXPONENT = 0.7  # heavy users exist, but activity is less skewed than popularity
PREFERRED_CATEGORY_BOOST = 8.0
SESSION_CONTINUE_PROBABILITY = 0.8  # geometric session lengths, mean 5 events
MAX_SESSION_EVENTS = 200
SESSION_DRIFT_PROBABILITY = 0.3  # chance an event leaves the session's category
GAP_MEDIAN_SECONDS = 40.0
BASE_CLICK_PROBABILITY = 0.12
BASE_PURCHASE_PROBABILITY = 0.02
MICROS_PER_SECOND = 1_000_000

# Relative traffic per UTC hour (quiet at night, peak in the evening) and per weekday (Monday first).
HOURLY_TRAFFIC = np.array(
    [0.25, 0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.55, 0.75, 0.80, 0.85, 0.90,
     1.00, 0.95, 0.90, 0.90, 0.95, 1.05, 1.25, 1.45, 1.50, 1.35, 0.95, 0.55]
)  # fmt: skip
WEEKDAY_TRAFFIC = np.array([1.00, 0.97, 0.98, 1.00, 1.08, 1.20, 1.18])

CATEGORY_NAMES = (
    "books", "electronics", "fashion", "home", "garden", "toys", "sports", "beauty", "grocery", "music",
    "movies", "games", "automotive", "health", "pets", "office", "jewelry", "outdoors", "baby", "tools",
    "crafts", "travel", "kitchen", "software",
)  # fmt: skip
TITLE_ADJECTIVES = (
    "Crimson", "Silent", "Golden", "Hidden", "Wild", "Velvet", "Iron", "Lunar", "Bright", "Quiet",
    "Electric", "Frozen", "Amber", "Northern", "Secret", "Gentle", "Broken", "Emerald", "Little", "Savage",
    "Hollow", "Radiant", "Distant", "Urban", "Ancient", "Copper", "Midnight", "Paper", "Scarlet", "Silver",
    "Winter", "Cosmic",
)  # fmt: skip
TITLE_NOUNS = (
    "Harbor", "Garden", "River", "Signal", "Forest", "Lantern", "Empire", "Orchard", "Compass", "Falcon",
    "Meadow", "Circuit", "Canyon", "Voyage", "Island", "Engine", "Mirror", "Thunder", "Atlas", "Beacon",
    "Valley", "Station", "Ember", "Horizon", "Tide", "Citadel", "Summit", "Willow", "Prism", "Anchor",
    "Cathedral", "Nomad",
)  # fmt: skip
TITLE_SUFFIXES = (
    "Stories", "Collection", "Edition", "Kit", "Classic", "Deluxe", "Set", "Series", "Pro", "Mini",
    "Essentials", "Chronicles", "Club", "Works", "Lab", "Original",
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticSpec:
    """How much synthetic data to make, over which time window, from which seed."""

    users: int = 10_000
    items: int = 5_000
    events: int = 1_000_000
    seed: int = 0
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    days: int = 30
    categories: int = 20
    clusters: int = 8
    chunk_rows: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("users", "items", "days", "categories", "clusters", "chunk_rows"):
            if getattr(self, name) < 1:
                raise InvalidSpec(f"SyntheticSpec.{name} must be at least 1, got {getattr(self, name)}.")
        if self.events < 0:
            raise InvalidSpec(f"SyntheticSpec.events cannot be negative, got {self.events}.")
        if self.items < self.categories:
            raise InvalidSpec(
                f"SyntheticSpec.items ({self.items}) must be at least categories ({self.categories}) "
                "so that every category holds an item. Lower categories or raise items."
            )
        if self.start.tzinfo is None:
            raise InvalidSpec(
                f"SyntheticSpec.start must be timezone-aware, got {self.start.isoformat()}. "
                "Pass e.g. datetime(2026, 1, 1, tzinfo=UTC)."
            )

    @property
    def chunks(self) -> int:
        """How many event chunks (and files) the spec produces."""
        return -(-self.events // self.chunk_rows)


@dataclass(frozen=True)
class SyntheticFiles:
    """The Parquet files :func:`generate_synthetic` wrote."""

    out_dir: Path
    events: list[Path]
    items: Path
    users: Path
    event_count: int


@dataclass(frozen=True)
class _World:
    """Everything fixed before the first event: items, users, tastes and the traffic curve."""

    item_category: np.ndarray  # category index per item (item_id = index + 1)
    item_rank: np.ndarray  # 1 = most often drawn
    items_by_category: np.ndarray  # item indices grouped by category
    item_key: np.ndarray  # category + cumulative share within it, aligned with items_by_category
    category_first: np.ndarray  # first position of each category in items_by_category
    category_last: np.ndarray
    cluster_category_key: np.ndarray  # flattened: cluster + cumulative category probabilities
    cluster_prefers: np.ndarray  # clusters x categories, bool
    user_cluster: np.ndarray
    user_cumulative: np.ndarray  # cumulative activity share, for drawing session owners
    traffic_cdf: np.ndarray  # share of all traffic before each hour boundary of the window
    start_us: int


def iter_synthetic_batches(spec: SyntheticSpec) -> Iterator[pa.RecordBatch]:
    """Stream the spec's events, one RecordBatch of at most ``chunk_rows`` rows per chunk."""
    yield from _event_batches(spec, _build_world(spec))


def synthetic_items(spec: SyntheticSpec) -> pa.Table:
    """The spec's item catalogue: id, category, generated title and popularity rank."""
    world = _build_world(spec)
    return _items_table(spec, world)


def synthetic_users(spec: SyntheticSpec) -> pa.Table:
    """The spec's users: id, taste cluster and signup time (always before the window starts)."""
    world = _build_world(spec)
    return _users_table(spec, world)


def generate_synthetic(
    spec: SyntheticSpec, out_dir: Path, progress: Callable[[int], None] | None = None
) -> SyntheticFiles:
    """Write ``events-00000.parquet`` … plus ``items.parquet`` and ``users.parquet`` into ``out_dir``.

    ``progress`` is called after each chunk with the number of events written so far. Event files left
    in ``out_dir`` by an earlier, larger run are removed so the folder holds exactly this spec's data.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.iterdir():
        if EVENT_FILE.fullmatch(stale.name):
            stale.unlink()
    world = _build_world(spec)
    items_path, users_path = out_dir / "items.parquet", out_dir / "users.parquet"
    pq.write_table(_items_table(spec, world), items_path)
    pq.write_table(_users_table(spec, world), users_path)
    event_paths: list[Path] = []
    written = 0
    for index, batch in enumerate(_event_batches(spec, world)):
        path = out_dir / f"events-{index:05d}.parquet"
        pq.write_table(pa.Table.from_batches([batch]), path)
        event_paths.append(path)
        written += batch.num_rows
        if progress is not None:
            progress(written)
    return SyntheticFiles(out_dir, event_paths, items_path, users_path, written)


def _build_world(spec: SyntheticSpec) -> _World:
    rng = np.random.default_rng([spec.seed, 0])
    item_category = _assign_categories(rng, spec.items, spec.categories)
    item_weight = _power_law(rng, spec.items, ITEM_POPULARITY_EXPONENT)
    category_weight = np.bincount(item_category, weights=item_weight, minlength=spec.categories)
    cluster_prefers = _cluster_preferences(rng, spec.clusters, spec.categories)
    cluster_category = category_weight * np.where(cluster_prefers, PREFERRED_CATEGORY_BOOST, 1.0)
    cluster_category = cluster_category / cluster_category.sum(axis=1, keepdims=True)
    user_cluster = rng.integers(0, spec.clusters, spec.users).astype(np.int32)
    user_weight = _power_law(rng, spec.users, USER_ACTIVITY_EXPONENT)
    cluster_share = np.bincount(user_cluster, weights=user_weight, minlength=spec.clusters)
    # Expected share of each item across all draws, so popularity_rank matches what events show.
    item_share = (
        (cluster_share @ cluster_category)[item_category] * item_weight / category_weight[item_category]
    )
    order = np.argsort(item_category, kind="stable")
    first = np.searchsorted(item_category[order], np.arange(spec.categories))
    last = np.append(first[1:], spec.items) - 1
    return _World(
        item_category=item_category,
        item_rank=_ranks(item_share),
        items_by_category=order,
        item_key=_segment_keys(item_category[order], item_weight[order]),
        category_first=first,
        category_last=last,
        cluster_category_key=_row_keys(cluster_category),
        cluster_prefers=cluster_prefers,
        user_cluster=user_cluster,
        user_cumulative=_cumulative(user_weight),
        traffic_cdf=_traffic_cdf(spec),
        start_us=(spec.start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1),
    )


def _assign_categories(rng: np.random.Generator, items: int, categories: int) -> np.ndarray:
    """Uneven category sizes, with at least one item in every category."""
    sizes = rng.dirichlet(np.full(categories, 2.0))
    category = rng.choice(categories, size=items, p=sizes)
    category[rng.permutation(items)[:categories]] = np.arange(categories)
    return category.astype(np.int64)


def _power_law(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Zipf weights 1/rank^exponent, shuffled so ids say nothing about popularity."""
    return rng.permutation(np.arange(1, n + 1, dtype=np.float64) ** -exponent)


def _cluster_preferences(rng: np.random.Generator, clusters: int, categories: int) -> np.ndarray:
    liked = max(1, min(3, categories // 4))
    prefers = np.zeros((clusters, categories), dtype=bool)
    for cluster in range(clusters):
        prefers[cluster, rng.choice(categories, size=liked, replace=False)] = True
    return prefers


def _ranks(share: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(share), dtype=np.int32)
    ranks[np.argsort(-share, kind="stable")] = np.arange(1, len(share) + 1, dtype=np.int32)
    return ranks


def _cumulative(weights: np.ndarray) -> np.ndarray:
    total = np.cumsum(weights)
    return total / total[-1]


def _segment_keys(segment: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sorted keys ``segment + share so far within it``, so one searchsorted draws from any segment."""
    total = np.cumsum(weights)
    starts = np.searchsorted(segment, segment, side="left")
    before = np.where(starts > 0, total[np.maximum(starts - 1, 0)], 0.0)
    ends = np.searchsorted(segment, segment, side="right") - 1
    return segment + (total - before) / (total[ends] - before)


def _row_keys(probabilities: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative[:, -1] = 1.0  # exact, so row r ends at r + 1 and never overlaps row r + 1
    return (cumulative + np.arange(len(probabilities))[:, None]).ravel()


def _traffic_cdf(spec: SyntheticSpec) -> np.ndarray:
    hours = np.arange(spec.days * 24)
    hour_of_day = (spec.start.astimezone(UTC).hour + hours) % 24
    weekday = (spec.start.astimezone(UTC).weekday() + (spec.start.astimezone(UTC).hour + hours) // 24) % 7
    traffic = HOURLY_TRAFFIC[hour_of_day] * WEEKDAY_TRAFFIC[weekday]
    return np.concatenate([[0.0], _cumulative(traffic)])


def _draw_in_rows(keys: np.ndarray, rows: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """For each row index, a column drawn from that row's cumulative probabilities in ``keys``."""
    position = np.searchsorted(keys, rows + rng.random(len(rows)), side="right")
    return np.clip(position - rows * width, 0, width - 1)


def _draw_items(world: _World, category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    position = np.searchsorted(world.item_key, category + rng.random(len(category)), side="right")
    position = np.clip(position, world.category_first[category], world.category_last[category])
    return world.items_by_category[position]


def _session_lengths(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Geometric session lengths summing to exactly ``rows`` (the last session is cut short)."""
    mean = 1.0 / (1.0 - SESSION_CONTINUE_PROBABILITY)
    lengths = np.empty(0, dtype=np.int64)
    while lengths.sum() < rows:
        more = rng.geometric(1.0 - SESSION_CONTINUE_PROBABILITY, size=int(rows / mean * 1.1) + 16)
        lengths = np.concatenate([lengths, np.minimum(more, MAX_SESSION_EVENTS)])
    ends = np.cumsum(lengths)
    count = int(np.searchsorted(ends, rows)) + 1
    lengths = lengths[:count]
    lengths[-1] -= ends[count - 1] - rows
    return lengths


def _event_batches(spec: SyntheticSpec, world: _World) -> Iterator[pa.RecordBatch]:
    next_session = 1
    for index in range(spec.chunks):
        first_row = index * spec.chunk_rows
        rows = min(spec.chunk_rows, spec.events - first_row)
        batch, sessions = _event_chunk(spec, world, index, first_row, rows, next_session)
        next_session += sessions
        yield batch


def _event_chunk(
    spec: SyntheticSpec, world: _World, index: int, first_row: int, rows: int, first_session: int
) -> tuple[pa.RecordBatch, int]:
    """One chunk of events: whole sessions (the last one cut short) from the chunk's slice of time."""
    rng = np.random.default_rng([spec.seed, 1, index])
    lengths = _session_lengths(rng, rows)
    sessions = len(lengths)
    owner = np.clip(
        np.searchsorted(world.user_cumulative, rng.random(sessions), side="right"), 0, spec.users - 1
    )
    cluster = world.user_cluster[owner]
    session_category = _draw_in_rows(world.cluster_category_key, cluster, spec.categories, rng)
    session_of = np.repeat(np.arange(sessions), lengths)
    event_cluster = cluster[session_of]
    category = session_category[session_of]
    drifted = np.flatnonzero(rng.random(rows) < SESSION_DRIFT_PROBABILITY)
    category[drifted] = _draw_in_rows(
        world.cluster_category_key, event_cluster[drifted], spec.categories, rng
    )
    item = _draw_items(world, category, rng)
    preferred = world.cluster_prefers[event_cluster, world.item_category[item]]
    event_type = _event_types(rng, preferred)
    value = _values(rng, preferred, event_type)
    ts = _timestamps(spec, world, rng, lengths, session_of, first_row, rows)
    # Stable, so events of one session that share a microsecond keep their order.
    order = np.argsort(ts, kind="stable")
    # Ids start at 1, leaving 0 free as the padding id sequence models use.
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(owner[session_of][order] + 1, pa.int64()),
            pa.array(item[order] + 1, pa.int64()),
            EVENT_TYPES.take(pa.array(event_type[order])),
            pa.array(value[order], pa.float32()),
            pa.array(ts[order], UTC_MICROS),
            pa.array(session_of[order] + first_session, pa.int64()),
        ],
        schema=EVENTS_SCHEMA,
    )
    return batch, sessions


def _event_types(rng: np.random.Generator, preferred: np.ndarray) -> np.ndarray:
    """0 view, 1 click, 2 purchase; items from a cluster's liked categories convert better."""
    purchase = BASE_PURCHASE_PROBABILITY * (1.0 + preferred)
    click = BASE_CLICK_PROBABILITY * (1.0 + 0.5 * preferred)
    draw = rng.random(len(preferred))
    return np.where(draw < purchase, 2, np.where(draw < purchase + click, 1, 0)).astype(np.int8)


def _values(rng: np.random.Generator, preferred: np.ndarray, event_type: np.ndarray) -> np.ndarray:
    """A 1 to 5 rating in half steps: higher for liked categories and for purchases."""
    raw = 3.1 + 0.8 * preferred + 0.4 * (event_type == 2) + rng.normal(0.0, 0.9, len(preferred))
    return np.clip(np.round(raw * 2.0) / 2.0, 1.0, 5.0).astype(np.float32)


def _timestamps(
    spec: SyntheticSpec,
    world: _World,
    rng: np.random.Generator,
    lengths: np.ndarray,
    session_of: np.ndarray,
    first_row: int,
    rows: int,
) -> np.ndarray:
    """Microsecond timestamps: session starts follow the traffic curve, events follow at short gaps."""
    window_us = spec.days * 86_400 * MICROS_PER_SECOND
    # The chunk's share of all events maps, through the traffic curve, to its slice of the window.
    share = (first_row + rows * rng.random(len(lengths))) / spec.events
    hour_edges = np.arange(len(world.traffic_cdf)) * 3600.0 * MICROS_PER_SECOND
    session_start = np.interp(share, world.traffic_cdf, hour_edges).astype(np.int64)
    gap_s = np.clip(rng.lognormal(np.log(GAP_MEDIAN_SECONDS), 1.0, rows), 1.0, 1800.0)
    gap = (gap_s * MICROS_PER_SECOND).astype(np.int64)
    first_event = np.cumsum(lengths) - lengths
    gap[first_event] = 0
    elapsed = np.cumsum(gap)
    offset = elapsed - elapsed[first_event][session_of]
    duration = offset[first_event + lengths - 1]
    session_start = np.minimum(session_start, window_us - 1 - duration)
    return world.start_us + session_start[session_of] + offset


def _items_table(spec: SyntheticSpec, world: _World) -> pa.Table:
    rng = np.random.default_rng([spec.seed, 2])
    titles = pc.binary_join_element_wise(
        pa.array(TITLE_ADJECTIVES).take(pa.array(rng.integers(0, len(TITLE_ADJECTIVES), spec.items))),
        pa.array(TITLE_NOUNS).take(pa.array(rng.integers(0, len(TITLE_NOUNS), spec.items))),
        pa.array(TITLE_SUFFIXES).take(pa.array(rng.integers(0, len(TITLE_SUFFIXES), spec.items))),
        " ",
    )
    names = pa.array([_category_name(c) for c in range(spec.categories)], pa.string())
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(1, spec.items + 1), pa.int64()),
            names.take(pa.array(world.item_category)),
            titles,
            pa.array(world.item_rank, pa.int32()),
        ],
        schema=ITEMS_SCHEMA,
    )


def _category_name(index: int) -> str:
    base = CATEGORY_NAMES[index % len(CATEGORY_NAMES)]
    return base if index < len(CATEGORY_NAMES) else f"{base}-{index // len(CATEGORY_NAMES)}"


def _users_table(spec: SyntheticSpec, world: _World) -> pa.Table:
    rng = np.random.default_rng([spec.seed, 3])
    two_years_us = 730 * 86_400 * MICROS_PER_SECOND
    signup = world.start_us - rng.integers(3600 * MICROS_PER_SECOND, two_years_us, spec.users)
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(1, spec.users + 1), pa.int64()),
            pa.array(world.user_cluster, pa.int32()),
            pa.array(signup, UTC_MICROS),
        ],
        schema=USERS_SCHEMA,
    )
