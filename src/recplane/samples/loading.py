"""Turning sample data into recplane datasets through the SDK (works embedded and remote alike)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from recplane.samples.movielens import ITEMS_SCHEMA, RATINGS_SCHEMA, USERS_SCHEMA, MovieLensTables
from recplane.samples.synthetic import SyntheticSpec, iter_synthetic_batches, synthetic_items, synthetic_users

if TYPE_CHECKING:
    from recplane.client import Client
    from recplane.ingest import IngestResult

__all__ = [
    "MOVIELENS_SPECS",
    "SYNTHETIC_EVENTS_SPEC",
    "load_movielens_into",
    "load_synthetic_into",
    "synthetic_movielens",
]

_TEAM = "default"

MOVIELENS_SPECS: dict[str, dict[str, Any]] = {
    "ratings": {
        "description": "MovieLens-100K explicit ratings (1-5 stars) with their Unix timestamps.",
        "event_time": "ts",
        "columns": {
            "user_id": {"type": "int64", "nullable": False},
            "item_id": {"type": "int64", "nullable": False},
            "rating": {"type": "float32", "nullable": False},
            "ts": {"type": "timestamp", "nullable": False},
        },
        "dedup_key": ["user_id", "item_id", "ts"],
        "quality": [
            {"rule": "not_null", "columns": ["user_id", "item_id", "rating", "ts"]},
            {"rule": "range", "column": "rating", "min": 1, "max": 5},
            {"rule": "unique", "columns": ["user_id", "item_id"]},
            {"rule": "row_count_anomaly", "min_rows": 1},
        ],
    },
    "users": {
        "description": "MovieLens-100K users: demographics.",
        "columns": {
            "user_id": {"type": "int64", "nullable": False},
            "age": "int32",
            "gender": "string",
            "occupation": "string",
            "zip_code": "string",
        },
        "quality": [
            {"rule": "unique", "columns": ["user_id"]},
            {"rule": "allowed_values", "column": "gender", "values": ["M", "F"]},
            {"rule": "range", "column": "age", "min": 1, "max": 120},
        ],
    },
    "items": {
        "description": "MovieLens-100K movies: title, release year and genres.",
        "columns": {
            "item_id": {"type": "int64", "nullable": False},
            "title": "string",
            "release_year": "int32",
            "genres": "list<string>",
        },
        "quality": [{"rule": "unique", "columns": ["item_id"]}, {"rule": "not_null", "columns": ["title"]}],
    },
}

SYNTHETIC_EVENTS_SPEC: dict[str, Any] = {
    "description": "Synthetic interaction log (power-law popularity, taste clusters, sessions).",
    "event_time": "ts",
    "columns": {
        "user_id": {"type": "int64", "nullable": False},
        "item_id": {"type": "int64", "nullable": False},
        "event_type": {"type": "string", "nullable": False},
        "value": "float32",
        "ts": {"type": "timestamp", "nullable": False},
        "session_id": "int64",
    },
    "quality": [
        {"rule": "not_null", "columns": ["user_id", "item_id", "event_type", "ts"]},
        {"rule": "allowed_values", "column": "event_type", "values": ["view", "click", "purchase"]},
    ],
}


def _ensure(client: Client, name: str, spec: dict[str, Any]) -> None:
    client.apply_dataset({"name": name, "team": _TEAM, **spec})


def load_movielens_into(
    client: Client, tables: MovieLensTables, prefix: str = "ml100k", batch_id: str | None = None
) -> dict[str, IngestResult]:
    """Create ``{prefix}_ratings/_users/_items`` and ingest the tables (idempotent per batch_id)."""
    results = {}
    for kind, table in (("ratings", tables.ratings), ("users", tables.users), ("items", tables.items)):
        name = f"{prefix}_{kind}"
        _ensure(client, name, MOVIELENS_SPECS[kind])
        key = f"{batch_id}:{name}" if batch_id else None
        results[name] = client.ingest(name, table, batch_id=key)
    return results


def load_synthetic_into(
    client: Client,
    events_dir: Path,
    *,
    name: str = "synthetic_events",
    batch_id: str | None = None,
    on_file: Callable[[Path, IngestResult], None] | None = None,
) -> list[IngestResult]:
    """Create the events dataset and ingest every ``events-*.parquet`` file, one commit per file."""
    _ensure(client, name, SYNTHETIC_EVENTS_SPEC)
    results = []
    for path in sorted(events_dir.glob("events-*.parquet")):
        key = f"{batch_id}:{path.name}" if batch_id else None
        result = client.ingest(name, path, batch_id=key)
        results.append(result)
        if on_file:
            on_file(path, result)
    return results


def synthetic_movielens(seed: int = 7) -> MovieLensTables:
    """Seeded synthetic data in MovieLens-100K's shape (943 users, 1,682 items, 100k ratings)."""
    spec = SyntheticSpec(users=943, items=1682, events=100_000, seed=seed)
    events = pa.Table.from_batches(list(iter_synthetic_batches(spec)))
    ratings = pa.table(
        [events["user_id"], events["item_id"], pc.round(events["value"]), events["ts"]], schema=RATINGS_SCHEMA
    )
    ratings = ratings.group_by(["user_id", "item_id"], use_threads=False).aggregate(
        [("rating", "last"), ("ts", "last")]
    )
    ratings = ratings.rename_columns(["user_id", "item_id", "rating", "ts"]).cast(RATINGS_SCHEMA)
    items = synthetic_items(spec)
    genres = pa.array([[category] for category in items["category"].to_pylist()], pa.list_(pa.string()))
    years = pa.nulls(items.num_rows, pa.int32())
    users = synthetic_users(spec)
    nulls = pa.nulls(users.num_rows, pa.string())
    return MovieLensTables(
        ratings=ratings.sort_by([("ts", "ascending"), ("user_id", "ascending")]),
        users=pa.table([users["user_id"], pa.nulls(users.num_rows, pa.int32()), nulls, nulls, nulls],
                       schema=USERS_SCHEMA),
        items=pa.table([items["item_id"], items["title"], years, genres], schema=ITEMS_SCHEMA),
        source=f"synthetic (seed {seed}): MovieLens-100K was not found",
    )
