"""Run Feast on the feature-store benchmark's data and report timings, memory and correctness as one JSON document.

This is the peer that ``recplane bench features`` compares recplane's feature store against. It runs inside its own
virtual environment (``benchmarks/peers/feast/.venv``, made by ``setup.sh``) and never imports recplane. It reads
the Parquet files written by ``benchmarks/features/data.py`` (generating them first when ``--data`` does not hold
them) and builds a Feast repository in a temporary folder over those files: entities ``user`` (``user_id``) and
``item`` (``item_id``), feature views ``user_features`` (TTL from the data's ``meta.json``, 7 days) and
``item_features`` (no TTL), each a ``FileSource`` with ``timestamp_field="event_ts"`` and
``created_timestamp_column="created_ts"``.

Measured, each step in a fresh child process (this script with ``--child``) so peak RSS is per step:

1. training sets: ``FeatureStore.get_historical_features(entity_df=labels[:N], features=[6 refs]).to_df()`` with
   the DuckDB offline store and with the default file (Dask) offline store, for each ``--label-rows`` N; the
   frame is written to Parquet (``--out-dir``) and, with ``--check`` (default), compared row by row with
   ``benchmarks/features/reference.py`` (rows missing, extra, mismatches per feature);
2. materialization of the full history (``FeatureStore.materialize(first event, last event + 1 s)``) into the
   SQLite online store and into Redis (``--redis``, db ``--redis-db``, flushed first);
3. online lookups through the SDK (``get_online_features(...).to_dict()``, the user view's 3 features):
   single-entity and batch-of-100 latency, p50/p99 per round, median over ``--rounds`` rounds; ids are drawn
   from the whole id space, so ~5% are entities with no rows. The served values of a sample of users are
   compared with the latest row per user (greatest ``(event_ts, created_ts)``).

``--threads`` (default 1) caps DuckDB (``SET threads``), Dask (synchronous scheduler at 1) and BLAS/OpenMP pools.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
FEATURES_BENCH = REPO / "benchmarks" / "features"
PROJECT = "recplane_bench"
USER_REFS = ["user_features:u_score", "user_features:u_clicks", "user_features:u_segment"]
ITEM_REFS = ["item_features:i_price", "item_features:i_popularity", "item_features:i_category"]
FEATURES = [ref.split(":")[1] for ref in USER_REFS + ITEM_REFS]


def load_sibling(name: str) -> Any:
    """``benchmarks/features/<name>.py`` loaded by path (they are scripts, not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"_features_bench_{name}", FEATURES_BENCH / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {FEATURES_BENCH / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def limit_threads(threads: int) -> None:
    """Cap every thread pool Feast's engines use, before they start (must run before importing them)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ[var] = str(threads)


def configure_engines(threads: int) -> None:
    """DuckDB (ibis's default backend, which Feast's DuckDB store uses) and Dask (Feast's file store)."""
    import dask
    import ibis

    ibis.get_backend().raw_sql(f"SET threads = {threads}")
    if threads == 1:
        dask.config.set(scheduler="synchronous")
    else:
        dask.config.set(scheduler="threads", num_workers=threads)


# --------------------------------------------------------------------------------------------- the Feast repo


def write_repo(repo: Path, offline: str, online: str, redis: str, redis_db: int) -> None:
    """A ``feature_store.yaml`` for one (offline, online) pair."""
    repo.mkdir(parents=True, exist_ok=True)
    online_cfg = (
        f"  type: sqlite\n  path: {repo / 'online.db'}\n"
        if online == "sqlite"
        else f'  type: redis\n  connection_string: "{redis},db={redis_db}"\n'
    )
    (repo / "feature_store.yaml").write_text(
        f"project: {PROJECT}\nregistry: {repo / 'registry.db'}\nprovider: local\n"
        f"offline_store:\n  type: {offline}\nonline_store:\n{online_cfg}"
        "entity_key_serialization_version: 3\n"
    )


def definitions(data: Path, meta: dict[str, Any]) -> list[Any]:
    """Entities, sources and feature views over the benchmark's Parquet files (TTLs from ``meta.json``)."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    spec = meta["spec"]

    def ttl(seconds: int | None) -> timedelta:
        return timedelta(0) if seconds is None else timedelta(seconds=seconds)  # Feast: 0 = no TTL

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    sources = {
        name: FileSource(
            name=f"{name}_source",
            path=str(data / f"{name}.parquet"),
            timestamp_field="event_ts",
            created_timestamp_column="created_ts",
        )
        for name in ("users", "items")
    }
    user_view = FeatureView(
        name="user_features",
        entities=[user],
        ttl=ttl(spec["user_ttl_seconds"]),
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="u_score", dtype=Float64),
            Field(name="u_clicks", dtype=Int64),
            Field(name="u_segment", dtype=String),
        ],
        source=sources["users"],
        online=True,
    )
    item_view = FeatureView(
        name="item_features",
        entities=[item],
        ttl=ttl(spec["item_ttl_seconds"]),
        schema=[
            Field(name="item_id", dtype=Int64),
            Field(name="i_price", dtype=Float64),
            Field(name="i_popularity", dtype=Int64),
            Field(name="i_category", dtype=String),
        ],
        source=sources["items"],
        online=True,
    )
    return [user, item, sources["users"], sources["items"], user_view, item_view]


def open_store(task: dict[str, Any], apply: bool) -> tuple[Any, float]:
    """The FeatureStore for the task's repo (written and applied when ``apply``); returns it and apply seconds."""
    from feast import FeatureStore

    repo = Path(task["repo"])
    if apply:
        write_repo(repo, task["offline"], task["online"], task["redis"], task["redis_db"])
    store = FeatureStore(repo_path=str(repo))
    started = time.perf_counter()
    if apply:
        store.apply(definitions(Path(task["data"]), task["meta"]))
    return store, time.perf_counter() - started


# --------------------------------------------------------------------------------------------- child steps


def peak_rss_mb() -> float:
    """This process's own peak RSS. ``ru_maxrss`` is not used: a child started by vfork+exec inherits the
    parent's peak there, which inflated every step to the parent's size (≈958 MB with the value check on)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def step_train(task: dict[str, Any]) -> dict[str, Any]:
    """get_historical_features(...).to_df() for the first N labels; writes the frame to ``task['out']``."""
    import pyarrow.parquet as pq

    store, apply_s = open_store(task, apply=True)
    labels = pq.read_table(Path(task["data"]) / "labels.parquet").slice(0, task["rows"]).to_pandas()
    entity_df = labels.rename(columns={"label_ts": "event_timestamp"})
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity_df, features=USER_REFS + ITEM_REFS).to_df()
    seconds = time.perf_counter() - started
    frame.rename(columns={"event_timestamp": "label_ts"}).to_parquet(task["out"], index=False)
    return {
        "seconds": seconds,
        "apply_seconds": apply_s,
        "rows_in": len(entity_df),
        "rows_returned": len(frame),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
    }


def flush_redis(task: dict[str, Any]) -> None:
    import redis

    host, port = task["redis"].split(":")
    redis.Redis(host=host, port=int(port), db=task["redis_db"]).flushdb()


def step_materialize(task: dict[str, Any]) -> dict[str, Any]:
    """materialize() of the whole history (first event .. last event + 1 s) into a fresh online store."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if task["online"] == "redis":
        flush_redis(task)
    online_db = Path(task["repo"]) / "online.db"
    if online_db.exists():
        online_db.unlink()
    store, apply_s = open_store(task, apply=True)
    events = [
        pq.read_table(Path(task["data"]) / f"{n}.parquet", columns=["event_ts"]).column(0) for n in ("users", "items")
    ]
    start = min(pc.min(e).as_py() for e in events) - timedelta(seconds=1)
    end = max(pc.max(e).as_py() for e in events) + timedelta(seconds=1)
    rows = sum(len(e) for e in events)
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    store.materialize(start_date=start, end_date=end)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "apply_seconds": apply_s,
        "source_rows": rows,
        "source_rows_per_s": rows / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
    }


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "mean_ms": statistics.fmean(ordered)}


def _time_lookups(call: Callable[[list[dict[str, int]]], Any], batches: list[list[dict[str, int]]]) -> list[float]:
    samples = []
    for rows in batches:
        started = time.perf_counter_ns()
        call(rows)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def _median_rounds(rounds: list[dict[str, float]]) -> dict[str, Any]:
    keys = rounds[0].keys()
    summary: dict[str, Any] = {k: statistics.median(r[k] for r in rounds) for k in keys}
    summary["rounds"] = rounds
    return summary


def step_lookup(task: dict[str, Any]) -> dict[str, Any]:
    """Single-entity and batch-of-100 get_online_features latency, plus a value check of served rows."""
    import numpy as np

    store, _ = open_store(task, apply=False)
    max_user = int(task["meta"]["spec"]["users"] * (1 + task["meta"]["spec"]["cold_fraction"]))
    rng = np.random.default_rng(2024)

    def lookup(rows: list[dict[str, int]]) -> dict[str, list[Any]]:
        return store.get_online_features(features=USER_REFS, entity_rows=rows).to_dict()

    def draw(count: int, size: int) -> list[list[dict[str, int]]]:
        ids = rng.integers(1, max_user + 1, size=(count, size))
        return [[{"user_id": int(u)} for u in row] for row in ids]

    _time_lookups(lookup, draw(task["warmup"], 1) + draw(max(1, task["warmup"] // 10), 100))
    single, batch = [], []
    for _ in range(task["rounds"]):
        single.append(_percentiles(_time_lookups(lookup, draw(task["single"], 1))))
        batch.append(_percentiles(_time_lookups(lookup, draw(task["batches"], 100))))
    return {
        "single": _median_rounds(single),
        "batch_100": _median_rounds(batch),
        "value_check": online_value_check(lookup, task, max_user),
        "peak_rss_mb": peak_rss_mb(),
    }


def online_value_check(
    lookup: Callable[[list[dict[str, int]]], dict[str, list[Any]]], task: dict[str, Any], max_user: int
) -> dict[str, Any]:
    """Served values of ``check_users`` users (cold ones included) vs the latest row per user."""
    import pandas as pd

    reference = load_sibling("reference")
    users = reference.load_views(task["data"])[0]
    expected = reference.latest_values(users).set_index("user_id")
    ids = list(range(1, max_user + 1, max(1, max_user // task["check_users"])))
    served = pd.DataFrame({k: v for k, v in lookup([{"user_id": u} for u in ids]).items()})
    want = expected.reindex(ids).reset_index().rename(columns={"index": "user_id"})
    want["label_id"] = served["label_id"] = range(len(ids))
    return reference.compare(want, served, list(users.columns))


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "train": step_train,
    "materialize": step_materialize,
    "lookup": step_lookup,
}


def run_child(task: dict[str, Any]) -> None:
    limit_threads(task["threads"])
    configure_engines(task["threads"])
    try:
        result = {"status": "ok", **STEPS[task["step"]](task)}
    except Exception:
        result = {"status": "error", "error": traceback.format_exc(), "peak_rss_mb": peak_rss_mb()}
    Path(task["result"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------- the parent


def spawn(task: dict[str, Any], timeout: float, verbose: bool) -> dict[str, Any]:
    """Run one step in a fresh process; its result, or why there is none."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        task = {**task, "result": handle.name}
    env = {**os.environ, **{v: str(task["threads"]) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(task)],
            stdout=None if verbose else subprocess.DEVNULL,
            stderr=None if verbose else subprocess.PIPE,
            text=True,
            timeout=timeout,
            env=env,
        )
        text = Path(task["result"]).read_text()
        result: dict[str, Any] = json.loads(text) if text else {"status": "error", "error": proc.stderr[-4000:]}
    except subprocess.TimeoutExpired:
        result = {"status": "timeout", "error": f"no result within {timeout:.0f} s"}
    finally:
        Path(task["result"]).unlink(missing_ok=True)
    result["process_seconds"] = time.perf_counter() - started
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get("status") == "ok" and key in r]
    return statistics.median(values) if values else None


def bench_training(
    args: argparse.Namespace, base: dict[str, Any], scratch: Path, out_dir: Path
) -> list[dict[str, Any]]:
    reference = load_sibling("reference") if args.check else None
    expected = reference.reference_for(args.data, max(args.label_rows)) if reference else None
    results = []
    for offline in args.offline:
        for rows in args.label_rows:
            out = out_dir / f"feast_{offline}_{rows}.parquet"
            runs = []
            for run in range(args.runs):
                task = {
                    **base,
                    "step": "train",
                    "offline": offline,
                    "online": "sqlite",
                    "rows": rows,
                    "repo": str(scratch / f"train_{offline}_{rows}_{run}"),
                    "out": str(out),
                }
                runs.append(spawn(task, args.timeout, args.verbose))
                log(f"train {offline} {rows}: {_brief(runs[-1])}")
                if runs[-1]["status"] != "ok":
                    break
            entry: dict[str, Any] = {
                "offline_store": offline,
                "label_rows": rows,
                "runs": runs,
                "seconds": median_of(runs, "seconds"),
                "peak_rss_mb": max((r["peak_rss_mb"] for r in runs if "peak_rss_mb" in r), default=None),
                "rows_returned": runs[-1].get("rows_returned"),
                "output": str(out),
            }
            if reference is not None and runs[-1]["status"] == "ok":
                import pandas as pd

                entry["correctness"] = reference.compare(expected.iloc[:rows], pd.read_parquet(out), FEATURES)
            results.append(entry)
    return results


def bench_online(args: argparse.Namespace, base: dict[str, Any], scratch: Path) -> tuple[list[Any], list[Any]]:
    materialized, lookups = [], []
    for online in args.online:
        repo = str(scratch / f"online_{online}")
        task = {**base, "offline": args.materialize_offline, "online": online, "repo": repo}
        runs = []
        for _ in range(args.runs):
            runs.append(spawn({**task, "step": "materialize"}, args.timeout, args.verbose))
            log(f"materialize {online}: {_brief(runs[-1])}")
            if runs[-1]["status"] != "ok":
                break
        materialized.append(
            {
                "online_store": online,
                "offline_store": args.materialize_offline,
                "runs": runs,
                "seconds": median_of(runs, "seconds"),
                "peak_rss_mb": max((r["peak_rss_mb"] for r in runs if "peak_rss_mb" in r), default=None),
                "source_rows": runs[-1].get("source_rows"),
            }
        )
        if runs[-1]["status"] != "ok":
            continue
        lookup = spawn(
            {
                **task,
                "step": "lookup",
                "warmup": args.warmup,
                "rounds": args.rounds,
                "single": args.single,
                "batches": args.batches,
                "check_users": args.check_users,
            },
            args.timeout,
            args.verbose,
        )
        log(f"lookup {online}: {_brief(lookup)}")
        lookups.append({"online_store": online, **lookup})
    return materialized, lookups


def _brief(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status']}: {result.get('error', '')[-600:]}"
    if "single" in result:
        return f"single p99 {result['single']['p99_ms']:.3f} ms, batch p99 {result['batch_100']['p99_ms']:.3f} ms"
    return f"{result['seconds']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB"


def log(message: str) -> None:
    print(f"[run_feast] {message}", file=sys.stderr, flush=True)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("feast", "duckdb", "ibis-framework", "dask", "pandas", "pyarrow", "redis", "numpy")
    return {name: version(name) for name in names}


def ensure_data(args: argparse.Namespace) -> dict[str, Any]:
    data = load_sibling("data")
    spec = data.DataSpec.scaled(0.1 if args.quick else args.scale, seed=args.seed)
    return data.ensure(spec, args.data)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        help="folder of data.py output (generated when absent or for another spec); "
        "default .bench/features/data-quick or data-full",
    )
    parser.add_argument("--quick", action="store_true", help="1/10 size data, 10k and 100k label rows")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label-rows", help="comma-separated label row counts (default 100000,1000000 scaled)")
    parser.add_argument("--offline", default="duckdb,file", help="offline stores for training sets")
    parser.add_argument("--online", default="sqlite,redis", help="online stores ('' to skip)")
    parser.add_argument("--materialize-offline", default="duckdb", choices=["duckdb", "file"])
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--runs", type=int, default=1, help="repetitions of each training set / materialization")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds; medians of per-round p50/p99")
    parser.add_argument("--single", type=int, default=1000, help="single-entity lookups per round")
    parser.add_argument("--batches", type=int, default=100, help="batch-of-100 lookups per round")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--check-users", type=int, default=2000, help="users whose served values are checked")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the reference comparison")
    parser.add_argument("--redis", default="127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=9, help="dedicated Redis db, FLUSHDB'd before materializing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child step")
    parser.add_argument("--out-dir", help="where training sets are written (default: a temp folder, kept)")
    parser.add_argument("--json", help="write the document here instead of stdout")
    parser.add_argument("--verbose", action="store_true", help="show Feast's own output")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else args.scale
    args.data = args.data or str(REPO / ".bench" / "features" / ("data-quick" if args.quick else f"data-{scale:g}"))
    default_rows = f"{round(100_000 * scale)},{round(1_000_000 * scale)}"
    args.label_rows = [int(r) for r in (args.label_rows or default_rows).split(",") if r]
    args.offline = [] if args.skip_training else [s for s in args.offline.split(",") if s]
    args.online = [s for s in args.online.split(",") if s]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return 0
    started = time.perf_counter()
    meta = ensure_data(args)
    scratch = Path(tempfile.mkdtemp(prefix="feast_peer_"))
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="feast_peer_out_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    base = {
        "data": str(Path(args.data).resolve()),
        "meta": meta,
        "threads": args.threads,
        "redis": args.redis,
        "redis_db": args.redis_db,
    }
    training = bench_training(args, base, scratch, out_dir)
    materialization, online = bench_online(args, base, scratch)
    document = {
        "peer": "feast",
        "versions": versions(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "threads": args.threads,
        "data": {"path": base["data"], **meta},
        "training_set": training,
        "materialization": materialization,
        "online_lookup": online,
        "total_seconds": time.perf_counter() - started,
    }
    text = json.dumps(document, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    failed = [r for r in training + materialization + online for run in r.get("runs", [r]) if run["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
