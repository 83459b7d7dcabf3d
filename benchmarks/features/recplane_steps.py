"""recplane's side of the feature-store benchmark: each step in its own process, so peak RSS is that step's.

``suite.py`` runs this file as ``python recplane_steps.py TASK_JSON RESULT_PATH`` once per step, mirroring what
``benchmarks/peers/feast/run_feast.py`` does for Feast with the same data, the same definitions and the same
measurement windows:

- ``setup`` — a recplane home: datasets ``users``/``items`` created and the generated Parquet files ingested
  through ``Client.ingest`` (the production path: schema-validated, committed as Delta versions), then the
  feature definitions registered with ``Client.apply_features`` (user view TTL from ``meta.json``, 7 days,
  item view no TTL, ``created_ts`` breaking event-time ties — Feast's definitions);
- ``train`` — ``Client.training_set(labels[:N], 6 features)`` timed from the call to the returned table (the label
  Parquet is read before the clock starts, as Feast's ``entity_df`` is); the table is written for the checks;
- ``materialize`` — ``Client.materialize`` of both views as of ``last event + 1 s`` (Feast's ``end_date``) into
  the embedded store or a flushed Redis db; then, untimed, every entity's served value is compared with the
  independent reference (``reference.py``) at that time: the latest row per entity, null past the TTL;
- ``lookup`` — ``Client.online_features`` (in process, or over HTTP when ``url`` is given) of the user view's 3
  features: the same id draws as Feast's (seed 2024), single entity and batches of 100, per-round p50/p99,
  median over rounds.

It imports recplane, and loads ``data.py``/``reference.py`` by path (they are scripts shared with the Feast venv).
"""

from __future__ import annotations

import importlib.util
import json
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
USER_REFS = ["user_features:u_score", "user_features:u_clicks", "user_features:u_segment"]
ITEM_REFS = ["item_features:i_price", "item_features:i_popularity", "item_features:i_category"]
FEATURES = [ref.split(":")[1] for ref in USER_REFS + ITEM_REFS]
TEAM = "recsys"
VIEWS = {"users": ("user_features", "user_id", "user"), "items": ("item_features", "item_id", "item")}


def load_sibling(name: str) -> Any:
    """``benchmarks/features/<name>.py`` loaded by path and registered (dataclasses need ``sys.modules``)."""
    module_name = f"_features_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    Linux's ``VmHWM`` (this address space's high-water mark), not ``ru_maxrss``: a child started by
    ``subprocess`` (vfork + exec) inherits its parent's high-water mark in ``ru_maxrss``, so a big parent (the
    suite holds the reference training set) would set a floor under every step's number."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def definitions_yaml(meta: dict[str, Any]) -> str:
    """The benchmark's entities and views, the same as the Feast peer registers."""
    spec = meta["spec"]
    lines = [
        "entities:",
        "  - {name: user, join_keys: [user_id]}",
        "  - {name: item, join_keys: [item_id]}",
        "feature_views:",
    ]
    for source, (view, _, entity) in VIEWS.items():
        ttl = spec[f"{entity}_ttl_seconds"]
        lines += [f"  - name: {view}", f"    entities: [{entity}]", f"    source: {source}"]
        lines += ["    created_time: created_ts"]
        if ttl is not None:
            lines.append(f"    ttl: {int(ttl)}s")
        lines.append(f"    features: [{', '.join(spec['features'][source])}]")
    return "\n".join(lines) + "\n"


def _client(task: dict[str, Any]) -> Any:
    from recplane import Client
    from recplane.config import Settings

    if task.get("url"):
        return Client(task["url"], task["token"])
    return Client(settings=Settings(home=Path(task["home"]), online_store=task.get("online_store", "embedded")))


def step_setup(task: dict[str, Any]) -> dict[str, Any]:
    """Create and ingest the two feature datasets, then register the definitions."""
    import pyarrow.parquet as pq

    data = Path(task["data"])
    started = time.perf_counter()
    rows = {}
    with _client(task) as client:
        for source in VIEWS:
            schema = pq.read_schema(data / f"{source}.parquet")
            columns = {field.name: _type_name(field.type) for field in schema}
            client.create_dataset({"name": source, "team": TEAM, "event_time": "event_ts", "columns": columns})
            done = client.ingest(source, data / f"{source}.parquet")
            rows[source] = {"accepted": done.accepted, "rejected": done.rejected}
        ingest_s = time.perf_counter() - started
        client.apply_features(definitions_yaml(task["meta"]))
    return {
        "ingest_seconds": ingest_s,
        "seconds": time.perf_counter() - started,
        "rows": rows,
        "peak_rss_mb": peak_rss_mb(),
    }


def _type_name(data_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_timestamp(data_type):
        return "timestamp"
    return {pa.int64(): "int64", pa.float64(): "float64", pa.string(): "string"}[data_type]


def step_train(task: dict[str, Any]) -> dict[str, Any]:
    """One training set of the first ``rows`` labels, timed from the call to the returned Arrow table."""
    import pyarrow.parquet as pq

    labels = pq.read_table(Path(task["data"]) / "labels.parquet").slice(0, task["rows"])
    with _client(task) as client:
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        table = client.training_set(labels, USER_REFS + ITEM_REFS, label_time_col="label_ts")
        seconds = time.perf_counter() - started
        peak = peak_rss_mb()
    pq.write_table(table, task["out"])
    return {
        "seconds": seconds,
        "rows_in": labels.num_rows,
        "rows_returned": table.num_rows,
        "peak_rss_mb": peak,
        "rss_before_mb": rss_before,
    }


def materialize_end(data: Path) -> datetime:
    """Feast's ``end_date``: the last event time of either table plus one second."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    last = max(pc.max(pq.read_table(data / f"{n}.parquet", columns=["event_ts"]).column(0)).as_py() for n in VIEWS)
    return last.astimezone(UTC) + timedelta(seconds=1)


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def step_materialize(task: dict[str, Any]) -> dict[str, Any]:
    """Both views as of ``end`` into a fresh store, then (untimed) every entity's served values checked."""
    if task["online_store"] != "embedded":
        flush_redis(task["online_store"])
    end = materialize_end(Path(task["data"]))
    with _client(task) as client:
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        done = client.materialize([view for view, _, _ in VIEWS.values()], end=end)
        seconds = time.perf_counter() - started
        peak = peak_rss_mb()
        check = online_value_check(client, task, end)
    return {
        "seconds": seconds,
        "source_rows": done.rows_read,
        "rows_written": done.rows_written,
        "source_rows_per_s": done.rows_read / seconds,
        "peak_rss_mb": peak,
        "rss_before_mb": rss_before,
        "end": end.isoformat(),
        "value_check": check,
    }


def online_value_check(client: Any, task: dict[str, Any], end: datetime) -> dict[str, Any]:
    """Every entity id (cold ones included) looked up at ``end`` vs the reference answer for a label at ``end``:
    the latest ``(event_ts, created_ts)`` row per entity, null when older than the view's TTL."""
    import pandas as pd

    reference = load_sibling("reference")
    spec = task["meta"]["spec"]
    report: dict[str, Any] = {"entities": 0, "value_mismatches": 0, "rows_missing": 0, "views": {}}
    for view, source in zip(reference.load_views(task["data"]), VIEWS, strict=True):
        name, key, _ = VIEWS[source]
        ids = list(range(1, spec[source] + round(spec[source] * spec["cold_fraction"]) + 1))
        labels = pd.DataFrame({key: ids, "label_ts": pd.Timestamp(end)})
        expected = reference.training_set(labels, [view])
        served: dict[str, list[Any]] = {column: [] for column in view.columns}
        for start in range(0, len(ids), 5_000):
            found = client.online_features({key: ids[start : start + 5_000]}, [f"{name}:*"], now=end)
            for column in view.columns:
                served[column].extend(found.values[column])
        actual = pd.DataFrame({key: ids, **served})
        expected["label_id"] = actual["label_id"] = range(len(ids))
        result = reference.compare(expected, actual, list(view.columns))
        report["views"][name] = result
        report["entities"] += len(ids)
        report["value_mismatches"] += result["value_mismatches"]
        report["rows_missing"] += result["rows_missing"]
    report["identical"] = all(r["identical"] for r in report["views"].values())
    return report


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
    summary: dict[str, Any] = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    summary["rounds"] = rounds
    return summary


def step_lookup(task: dict[str, Any]) -> dict[str, Any]:
    """Single-entity and batch-of-100 lookups of the user view's 3 features, drawn exactly as Feast's are."""
    import numpy as np

    spec = task["meta"]["spec"]
    max_user = int(spec["users"] * (1 + spec["cold_fraction"]))
    rng = np.random.default_rng(2024)
    now = datetime.fromisoformat(task["now"])
    served = {"ok": 0, "other": 0}
    with _client(task) as client:

        def lookup(rows: list[dict[str, int]]) -> Any:
            return client.online_features(rows, USER_REFS, now=now)

        def draw(count: int, size: int) -> list[list[dict[str, int]]]:
            ids = rng.integers(1, max_user + 1, size=(count, size))
            return [[{"user_id": int(u)} for u in row] for row in ids]

        _time_lookups(lookup, draw(task["warmup"], 1) + draw(max(1, task["warmup"] // 10), 100))
        single, batch = [], []
        for _ in range(task["rounds"]):
            single.append(_percentiles(_time_lookups(lookup, draw(task["single"], 1))))
            batch.append(_percentiles(_time_lookups(lookup, draw(task["batches"], 100))))
        for status in lookup(draw(1, 100)[0]).statuses:
            served["ok" if status == "ok" else "other"] += 1
        check = online_value_check(client, task, now) if task.get("check") else None
    return {
        "single": _median_rounds(single),
        "batch_100": _median_rounds(batch),
        "statuses_of_100": served,
        "peak_rss_mb": peak_rss_mb(),
        "value_check": check,
    }


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "setup": step_setup,
    "train": step_train,
    "materialize": step_materialize,
    "lookup": step_lookup,
}


def main(argv: list[str]) -> int:
    task, result_path = json.loads(argv[0]), Path(argv[1])
    try:
        result = {"status": "ok", **STEPS[task["step"]](task)}
    except Exception:
        result = {"status": "error", "error": traceback.format_exc(), "peak_rss_mb": peak_rss_mb()}
    result_path.write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
