"""Online store micro-benchmark: write throughput and read latency, in-process, embedded candidates vs Redis.

    python benchmarks/features/online_micro.py [--rows 200000] [--reads 3000] [--redis-url redis://...] [--json]

Writes one deterministic feature table (int, float, str, a last-10 list and a 16-d float32 vector per
entity), then times single-entity reads and 100-entity batch reads of random existing keys. Cases:

- ``embedded`` / ``redis``: the real stores through ``OnlineStore.read`` (what serving pays): key encoding,
  newer-wins upsert, decoding, statuses and TTL check included;
- ``raw-sqlite`` / ``raw-lmdb``: the bare storage engines holding the same MessagePack rows (key → blob, no
  newer-wins bookkeeping on reads) — the candidates the embedded store was chosen from. LMDB is measured
  only when the ``lmdb`` package is importable (it is not a recplane dependency).

Every read is checked against the written values before timing. Latencies: p50/p99 over ``--reads`` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recplane.features.online import EmbeddedOnlineStore, OnlineStore, RedisOnlineStore
from recplane.features.online.codec import encode_key, encode_values

FEATURES = ["clicks", "ctr", "segment", "last_items", "embedding"]
VIEW = "bench_users"
START = datetime(2026, 1, 1, tzinfo=UTC)


def feature_table(rows: int, seed: int = 7) -> pa.Table:
    """Deterministic entity rows: one per user id 1..rows."""
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal((rows, 16), dtype=np.float32)
    last_items = rng.integers(1, 50_000, size=(rows, 10))
    return pa.table(
        {
            "user_id": np.arange(1, rows + 1),
            "clicks": rng.integers(0, 1000, rows),
            "ctr": rng.random(rows),
            "segment": pa.array([f"seg{i % 17}" for i in range(rows)]),
            "last_items": pa.array(list(last_items), type=pa.list_(pa.int64())),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embedding.ravel()), 16),
            "event_time": pa.array([START + timedelta(seconds=i % 86_400) for i in range(rows)]),
        }
    )


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples_ns)
    return {
        "p50_ms": ordered[len(ordered) // 2] / 1e6,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6,
        "mean_ms": statistics.fmean(ordered) / 1e6,
    }


def time_calls(call: Callable[[list[int]], Any], key_batches: list[list[int]]) -> dict[str, float]:
    """Latency of ``call`` on each key batch (after a warm-up of 200 calls)."""
    for keys in key_batches[:200]:
        call(keys)
    samples = []
    for keys in key_batches:
        started = time.perf_counter_ns()
        call(keys)
        samples.append(time.perf_counter_ns() - started)
    return percentiles(samples)


def key_batches(rows: int, reads: int, size: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randint(1, rows) for _ in range(size)] for _ in range(reads)]


def bench_store(name: str, store: OnlineStore, table: pa.Table, reads: int) -> dict[str, Any]:
    """Write the table twice (the second write is all older-or-equal rows) and time reads through the store."""
    write = store.write(VIEW, table, key_columns=["user_id"], feature_columns=FEATURES, event_time_column="event_time")
    rewrite = store.write(
        VIEW, table, key_columns=["user_id"], feature_columns=FEATURES, event_time_column="event_time"
    )
    assert write.rows_applied == table.num_rows and rewrite.rows_applied == 0, (write, rewrite)
    rows = table.num_rows
    check = store.read(VIEW, [1, rows, rows + 1], ["clicks", "embedding"], ttl=None)
    assert check.statuses == ["ok", "ok", "missing"], check.statuses
    assert check.values["clicks"][0] == table["clicks"][0].as_py()
    assert np.array_equal(check.values["embedding"][1], np.array(table["embedding"][rows - 1].as_py(), np.float32))

    def read(keys: list[int]) -> None:
        store.read(VIEW, keys, FEATURES, ttl=timedelta(days=3650))

    return {
        "case": name,
        "write_rows_per_s": round(write.rows_per_second),
        "rewrite_older_rows_per_s": round(rewrite.rows_per_second),
        "single": time_calls(read, key_batches(rows, reads, 1, 1)),
        "batch100": time_calls(read, key_batches(rows, max(reads // 5, 300), 100, 2)),
    }


def encoded_rows(table: pa.Table) -> list[tuple[bytes, int, bytes]]:
    """(key, event µs, MessagePack row) for the raw-engine candidates."""
    store_columns = [table[name].to_pylist() for name in FEATURES]
    events = table["event_time"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    keys = [encode_key(k) for k in table["user_id"].to_pylist()]
    rows = zip(*store_columns, strict=True)
    return [(k, e, encode_values(row)) for k, e, row in zip(keys, events, rows, strict=True)]


def bench_raw_sqlite(folder: Path, rows: list[tuple[bytes, int, bytes]], reads: int) -> dict[str, Any]:
    connection = sqlite3.connect(folder / "raw.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("CREATE TABLE t (key BLOB PRIMARY KEY, event_us INTEGER, row BLOB) WITHOUT ROWID")
    started = time.perf_counter()
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    connection.execute("COMMIT")
    write_rate = len(rows) / (time.perf_counter() - started)
    from recplane.features.online.codec import decode_values

    def read(keys: list[int]) -> None:
        encoded = [encode_key(k) for k in keys]
        if len(encoded) == 1:
            decode_values(connection.execute("SELECT event_us, row FROM t WHERE key = ?", encoded).fetchone()[1])
            return
        query = f"SELECT key, event_us, row FROM t WHERE key IN ({','.join('?' * len(encoded))})"
        found = {key: decode_values(row) for key, _, row in connection.execute(query, encoded)}
        [found[key] for key in encoded]

    n = len(rows)
    result = {
        "case": "raw-sqlite",
        "write_rows_per_s": round(write_rate),
        "single": time_calls(read, key_batches(n, reads, 1, 1)),
        "batch100": time_calls(read, key_batches(n, max(reads // 5, 300), 100, 2)),
    }
    connection.close()
    return result


def bench_raw_lmdb(folder: Path, rows: list[tuple[bytes, int, bytes]], reads: int) -> dict[str, Any] | None:
    try:
        import lmdb
    except ImportError:
        return None
    from recplane.features.online.codec import decode_values

    env = lmdb.open(str(folder / "raw.lmdb"), map_size=1 << 34)
    started = time.perf_counter()
    with env.begin(write=True) as txn:
        for key, event, row in rows:
            stored = txn.get(key)
            if stored is not None and struct.unpack_from("<q", stored)[0] >= event:
                continue
            txn.put(key, struct.pack("<q", event) + row)
    write_rate = len(rows) / (time.perf_counter() - started)

    def read(keys: list[int]) -> None:
        with env.begin() as txn:
            for key in keys:
                blob = txn.get(encode_key(key))
                struct.unpack_from("<q", blob)
                decode_values(blob[8:])

    n = len(rows)
    result = {
        "case": "raw-lmdb",
        "write_rows_per_s": round(write_rate),
        "single": time_calls(read, key_batches(n, reads, 1, 1)),
        "batch100": time_calls(read, key_batches(n, max(reads // 5, 300), 100, 2)),
    }
    env.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=3_000)
    parser.add_argument("--redis-url", default=os.environ.get("RECPLANE_TEST_REDIS_URL"))
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    args = parser.parse_args(argv)
    table = feature_table(args.rows)
    folder = Path(tempfile.mkdtemp(prefix="online-micro-"))
    results: list[dict[str, Any]] = []
    try:
        with EmbeddedOnlineStore(folder / "embedded") as embedded:
            results.append(bench_store("embedded", embedded, table, args.reads))
        if args.redis_url:
            prefix = f"bench:{os.getpid()}:"
            with RedisOnlineStore(args.redis_url, prefix=prefix) as redis_store:
                try:
                    results.append(bench_store("redis", redis_store, table, args.reads))
                finally:
                    redis_store.delete_view(VIEW)
        rows = encoded_rows(table)
        results.append(bench_raw_sqlite(folder, rows, args.reads))
        lmdb_result = bench_raw_lmdb(folder, rows, args.reads)
        if lmdb_result is not None:
            results.append(lmdb_result)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(results, args.rows, as_json=args.json)


def report(results: list[dict[str, Any]], rows: int, *, as_json: bool) -> None:
    for result in results:
        result["rows"] = rows
        if as_json:
            print(json.dumps(result))
            continue
        single, batch = result["single"], result["batch100"]
        rewrite = result.get("rewrite_older_rows_per_s")
        print(
            f"{result['case']:<11} write {result['write_rows_per_s']:>9,} rows/s"
            + (f"  re-write(older) {rewrite:>9,} rows/s" if rewrite else " " * 35)
            + f"  single p50 {single['p50_ms']:.3f} ms p99 {single['p99_ms']:.3f} ms"
            f"  batch100 p50 {batch['p50_ms']:.3f} ms p99 {batch['p99_ms']:.3f} ms",
            file=sys.stdout,
        )


if __name__ == "__main__":
    main()
