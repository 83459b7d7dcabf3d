"""Deterministic synthetic inputs for the feature-store benchmark: feature tables and a label table as Parquet.

Both recplane's feature store and the Feast peer (``benchmarks/peers/feast/run_feast.py``, its own venv) read the
same files, so this module depends on NumPy and PyArrow only and never imports recplane. It is loaded by path
(``importlib``) from either environment, or run as a script::

    python benchmarks/features/data.py OUT_DIR [--quick | --scale 0.1] [--seed 7]

What the files hold, and why (each trait is something a point-in-time join can get wrong):

- ``users.parquet`` — ``user_id, event_ts, created_ts, u_score (float64, ~1% null), u_clicks (int64),
  u_segment (string)``: 100k users with 5..15 rows each (~10) spread over 30 days.
- ``items.parquet`` — ``item_id, event_ts, created_ts, i_price (float64), i_popularity (int64), i_category
  (string)``: 50k items with 3..7 rows each (~5).
- ``labels.parquet`` — ``label_id, user_id, item_id, label_ts, label``: 1M rows over the same 30 days, in random
  order. ``label_id`` (0..n-1) is a stable row key so that outputs can be matched row by row; the first N rows are
  a uniform sample, so a 100k-row configuration reads the first 100k.
- **Event-time ties**: ~3% of feature rows have a twin with the same entity and ``event_ts``, a different
  ``created_ts`` (earlier or later, at random) and different values; the later ``created_ts`` must win. Rows are
  shuffled, so "last row in the file" is not a valid tie-breaker.
- **Late-arriving rows**: ~2% of rows are created 1..5 days after their event time (for backfill-safety options
  that exclude values created after the label time); the rest within an hour.
- **Entities with no feature rows**: 5% extra user ids and item ids that appear in labels only.
- **Boundary labels**: ~2% of labels sit exactly on one of the user's event times (``<=`` must include it) and
  ~1% exactly ``USER_TTL`` after one (TTL expiry is inclusive: ``label_ts - event_ts <= ttl`` is still valid).

Timestamps are whole seconds, stored as ``timestamp[us, UTC]``. ``(entity, event_ts, created_ts)`` is unique, so
the correct answer is unambiguous. ``meta.json`` records the spec (sizes, seed, TTLs, columns, row counts).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY_SECONDS = 86_400
START = np.datetime64("2024-01-01T00:00:00", "s")
USER_TTL_SECONDS = 7 * DAY_SECONDS
ITEM_TTL_SECONDS: int | None = None  # item features never expire in the benchmark definition

USER_FEATURES = ("u_score", "u_clicks", "u_segment")
ITEM_FEATURES = ("i_price", "i_popularity", "i_category")
SEGMENTS = tuple(f"seg_{i:02d}" for i in range(20))
CATEGORIES = tuple(f"cat_{i:03d}" for i in range(200))
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class DataSpec:
    """Sizes and traits of one generated data set (``scale`` 1.0 is the issue's full size)."""

    users: int = 100_000
    items: int = 50_000
    labels: int = 1_000_000
    days: int = 30
    seed: int = 7
    user_rows: tuple[int, int] = (5, 15)
    item_rows: tuple[int, int] = (3, 7)
    tie_fraction: float = 0.03
    late_fraction: float = 0.02
    cold_fraction: float = 0.05
    user_ttl_seconds: int | None = USER_TTL_SECONDS
    item_ttl_seconds: int | None = ITEM_TTL_SECONDS
    features: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"users": USER_FEATURES, "items": ITEM_FEATURES}
    )

    @classmethod
    def scaled(cls, scale: float, seed: int = 7) -> DataSpec:
        """The full-size spec with entity and label counts multiplied by ``scale`` (``--quick`` is 0.1)."""
        return cls(
            users=max(10, round(100_000 * scale)),
            items=max(10, round(50_000 * scale)),
            labels=max(10, round(1_000_000 * scale)),
            seed=seed,
        )


def _seconds(ts: np.ndarray) -> pa.Array:
    """Whole seconds since the epoch -> ``timestamp[us, UTC]``."""
    return pa.array(ts.astype("int64") * 1_000_000, type=pa.int64()).cast(TIMESTAMP)


def _entity_ids(count: int, cold_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ids 1..count+cold, split into ids that get feature rows and ids that never do (labels only)."""
    cold = round(count * cold_fraction)
    all_ids = np.arange(1, count + cold + 1, dtype=np.int64)
    cold_mask = np.zeros(all_ids.size, dtype=bool)
    cold_mask[rng.choice(all_ids.size, size=cold, replace=False)] = True
    return all_ids[~cold_mask], all_ids[cold_mask]


def _history(
    warm_ids: np.ndarray, rows: tuple[int, int], spec: DataSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entity, event_ts, created_ts) per row, ties and late arrivals included, unique on all three."""
    counts = rng.integers(rows[0], rows[1] + 1, size=warm_ids.size)
    entity = np.repeat(warm_ids, counts)
    span = spec.days * DAY_SECONDS
    base = int(START.astype("int64"))
    event = base + rng.integers(0, span, size=entity.size)
    delay = rng.integers(0, 3_600, size=entity.size)
    late = rng.random(entity.size) < spec.late_fraction
    delay[late] = rng.integers(DAY_SECONDS, 5 * DAY_SECONDS, size=int(late.sum()))
    created = event + delay
    tied = np.flatnonzero(rng.random(entity.size) < spec.tie_fraction)
    shift = rng.integers(1, 1_800, size=tied.size) * rng.choice(np.array([-1, 1]), size=tied.size)
    entity = np.concatenate([entity, entity[tied]])
    event = np.concatenate([event, event[tied]])
    created = np.concatenate([created, np.maximum(created[tied] + shift, event[tied])])
    keep = _first_of_each(entity, event, created)
    order = rng.permutation(keep.size)
    return entity[keep][order], event[keep][order], created[keep][order]


def _first_of_each(entity: np.ndarray, event: np.ndarray, created: np.ndarray) -> np.ndarray:
    """Indices keeping one row per (entity, event, created) so the correct answer is never ambiguous."""
    order = np.lexsort((created, event, entity))
    e, v, c = entity[order], event[order], created[order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = (e[1:] != e[:-1]) | (v[1:] != v[:-1]) | (c[1:] != c[:-1])
    return np.sort(order[new])


def _table(
    key: str, entity: np.ndarray, event: np.ndarray, created: np.ndarray, values: dict[str, pa.Array]
) -> pa.Table:
    columns: dict[str, pa.Array] = {
        key: pa.array(entity, type=pa.int64()),
        "event_ts": _seconds(event),
        "created_ts": _seconds(created),
    }
    columns.update(values)
    return pa.table(columns)


def users_table(spec: DataSpec, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    """The users feature table and the cold user ids (in labels, never in this table)."""
    warm, cold = _entity_ids(spec.users, spec.cold_fraction, rng)
    entity, event, created = _history(warm, spec.user_rows, spec, rng)
    n = entity.size
    score = rng.normal(0.0, 1.0, size=n).round(6)
    values = {
        "u_score": pa.array(score, mask=rng.random(n) < 0.01, type=pa.float64()),
        "u_clicks": pa.array(rng.integers(0, 1_000, size=n), type=pa.int64()),
        "u_segment": pa.array(np.array(SEGMENTS)[rng.integers(0, len(SEGMENTS), size=n)], type=pa.string()),
    }
    return _table("user_id", entity, event, created, values), cold


def items_table(spec: DataSpec, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    """The items feature table and the cold item ids."""
    warm, cold = _entity_ids(spec.items, spec.cold_fraction, rng)
    entity, event, created = _history(warm, spec.item_rows, spec, rng)
    n = entity.size
    values = {
        "i_price": pa.array(rng.lognormal(2.0, 1.0, size=n).round(4), type=pa.float64()),
        "i_popularity": pa.array(rng.integers(0, 100_000, size=n), type=pa.int64()),
        "i_category": pa.array(np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), size=n)], type=pa.string()),
    }
    return _table("item_id", entity, event, created, values), cold


def labels_table(spec: DataSpec, users: pa.Table, items: pa.Table, rng: np.random.Generator) -> pa.Table:
    """Label rows over all user/item ids (cold ones included), with exact-boundary timestamps mixed in."""
    max_user = int(spec.users + round(spec.users * spec.cold_fraction))
    max_item = int(spec.items + round(spec.items * spec.cold_fraction))
    n = spec.labels
    user = rng.integers(1, max_user + 1, size=n)
    item = rng.integers(1, max_item + 1, size=n)
    base = int(START.astype("int64"))
    ts = base + rng.integers(0, spec.days * DAY_SECONDS, size=n)
    user_ids = users.column("user_id").to_numpy()
    user_event = users.column("event_ts").cast(pa.int64()).to_numpy() // 1_000_000
    on_event = np.flatnonzero(rng.random(n) < 0.02)
    rows = rng.integers(0, user_ids.size, size=on_event.size)
    user[on_event], ts[on_event] = user_ids[rows], user_event[rows]
    if spec.user_ttl_seconds is not None:
        on_ttl = np.flatnonzero(rng.random(n) < 0.01)
        rows = rng.integers(0, user_ids.size, size=on_ttl.size)
        user[on_ttl], ts[on_ttl] = user_ids[rows], user_event[rows] + spec.user_ttl_seconds
    return pa.table(
        {
            "label_id": pa.array(np.arange(n, dtype=np.int64)),
            "user_id": pa.array(user, type=pa.int64()),
            "item_id": pa.array(item, type=pa.int64()),
            "label_ts": _seconds(ts),
            "label": pa.array((rng.random(n) < 0.1).astype(np.int64), type=pa.int64()),
        }
    )


def generate(spec: DataSpec) -> dict[str, pa.Table]:
    """The three tables for ``spec``; the same spec always gives the same rows in the same order."""
    rng = np.random.default_rng(spec.seed)
    users, _ = users_table(spec, rng)
    items, _ = items_table(spec, rng)
    labels = labels_table(spec, users, items, rng)
    return {"users": users, "items": items, "labels": labels}


def write(spec: DataSpec, out_dir: str | Path) -> dict[str, Any]:
    """Generate and write ``users/items/labels.parquet`` and ``meta.json`` into ``out_dir``; returns the meta."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = generate(spec)
    for name, table in tables.items():
        pq.write_table(table, out / f"{name}.parquet", row_group_size=256_000)
    meta = {"spec": asdict(spec), "rows": {name: t.num_rows for name, t in tables.items()}}
    meta.update(trait_counts(tables))
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def ensure(spec: DataSpec, out_dir: str | Path) -> dict[str, Any]:
    """Reuse ``out_dir`` when it already holds data for exactly ``spec``; otherwise (re)generate it."""
    meta_path = Path(out_dir) / "meta.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("spec") == json.loads(json.dumps(asdict(spec))):
            return meta
    return write(spec, out_dir)


def trait_counts(tables: dict[str, pa.Table]) -> dict[str, Any]:
    """How many ties, cold entities and boundary labels the data holds (proves the traits are really there)."""
    counts: dict[str, Any] = {}
    for name, key in (("users", "user_id"), ("items", "item_id")):
        t = tables[name]
        entity = t.column(key).to_numpy()
        event = t.column("event_ts").cast(pa.int64()).to_numpy()
        pairs = np.unique(np.stack([entity, event]), axis=1).shape[1]
        counts[f"{name}_tied_rows"] = int(entity.size - pairs)
        label_ids = np.unique(tables["labels"].column(key).to_numpy())
        counts[f"{name}_cold_in_labels"] = int(np.setdiff1d(label_ids, np.unique(entity)).size)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--quick", action="store_true", help="1/10 of the full size (same as --scale 0.1)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    spec = DataSpec.scaled(0.1 if args.quick else args.scale, seed=args.seed)
    meta = write(spec, args.out_dir)
    json.dump(meta, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
